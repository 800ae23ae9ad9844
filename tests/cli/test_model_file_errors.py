"""A model file of another schema version, or malformed, is one clear CLI error."""

import numpy as np
import pytest
import torch

from dspt_geo.data.statistics import BandStatistics
from dspt_geo.models import build_encoder, build_task_model, save_model_file
from dspt_geo.models.finetuned import SCHEMA_VERSION, FinetunedMetadata, PredictionSpec

from .conftest import assert_user_error, dspt_geo, write_tif


def _model_file(path, **changes):
    torch.manual_seed(0)
    encoder, _ = build_encoder(
        'vit_tiny_patch16_224', 2, image_size=32, patch_size=8,
        model_args={'depth': 1, 'embed_dim': 32, 'num_heads': 2},
    )  # fmt: skip
    model = build_task_model('classify', encoder, 2)
    bands = ('band_1', 'band_2')
    metadata = FinetunedMetadata(
        spec=PredictionSpec(
            task='classify',
            class_names=('a', 'b'),
            class_colours=((0, 0, 0), (255, 255, 255)),
            bands=bands,
            in_chans=2,
            statistics=BandStatistics(bands, (0.0, 0.0), (1.0, 1.0), (), (), (), 1),
            tile=32,
            overlap=0,
            patch_size=8,
        ),
        model_config=model.config(),
    ).to_metadata()
    metadata.update(changes)
    save_model_file(path, model.state_dict(), metadata)
    return path


@pytest.mark.parametrize(
    ('changes', 'fragments'),
    [
        ({'schema_version': 0}, ('schema 0', 're-train it with dspt-geo >= 0.1')),
        ({'schema_version': SCHEMA_VERSION + 1}, ('update dspt-geo',)),
        ({'tile': {'size': 32}}, ('tile.overlap', 'the key is missing')),
    ],
)
def test_predict_and_evaluate_refuse_it_in_one_line(tmp_path, changes, fragments):
    model = _model_file(tmp_path / 'model.safetensors', **changes)
    scene = write_tif(tmp_path / 'scene.tif', np.ones((2, 64, 64), dtype='uint8'))

    predicted = dspt_geo(
        'predict', scene, '--model', model, '--out', tmp_path / 'out.tif',
        '--no-progress',
    )  # fmt: skip
    shown = dspt_geo('evaluate', model, '--images', scene)

    assert_user_error(predicted, 'model.safetensors', *fragments)
    assert_user_error(shown, 'model.safetensors', *fragments)
    assert not (tmp_path / 'out.tif').exists()
