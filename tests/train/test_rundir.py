"""The run folder's Trainer pieces: the progress bar's redraws (issue 15)."""

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from dspt_geo.train.rundir import StderrProgressBar


def test_training_bar_is_redrawn_now_and_then_and_at_the_end(tmp_path, monkeypatch):
    drawn = []
    original = TQDMProgressBar.on_train_batch_end

    def counted(self, trainer, module, outputs, batch, batch_idx):
        drawn.append(batch_idx)
        original(self, trainer, module, outputs, batch, batch_idx)

    monkeypatch.setattr(TQDMProgressBar, 'on_train_batch_end', counted)
    bar = StderrProgressBar()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=40,
        limit_val_batches=0,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator='cpu',
    )
    trainer.fit(BoringModel())

    # 80 fast steps: the first and last batch of each epoch redraw, few others.
    assert 39 in drawn and drawn.count(39) == 2 and len(drawn) < 10
    assert bar.train_progress_bar.n == 40
