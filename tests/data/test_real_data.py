"""The data layer on the real samples in ../shared/data (skipped when absent)."""

from torchgeo.samplers import RandomGeoSampler

from dspt_geo.data import SensorDataset, group_rasters, scan_rasters
from dspt_geo.data.sampling import PatchStream


def test_every_real_group_serves_patches(shared_data):
    scan = scan_rasters([shared_data / 'optical', shared_data / 'sar'])
    groups = {g.name: g for g in group_rasters(scan.rasters)}

    assert scan.skipped == []
    assert '12band-uint16-B01-to-B12' in groups, (
        'BigEarthNet bands joined from 12 files'
    )
    assert '4band-complex64-VV-VH-HH-HV' in groups, 'SpaceNet-6 quad-pol SLC'
    assert groups['4band-uint8'].crs.to_epsg() == 26914, 'NAIP holds most pixels'
    for group in groups.values():
        dataset = SensorDataset(group)
        samples = list(PatchStream(dataset, size=16, length=3, min_valid_fraction=0.2))
        assert len(samples) == 3
        for sample in samples:
            assert sample['image'].shape == (group.count, 16, 16)
            assert dataset.valid_mask(sample['image']).float().mean() >= 0.2


def test_real_sar_in_db_has_plausible_backscatter(shared_data):
    (group,) = group_rasters(
        scan_rasters([shared_data / 'sar' / 's1a_iw_vv_grd_db.tif']).rasters
    )
    dataset = SensorDataset(group)

    values = [dataset[q]['image'] for q in RandomGeoSampler(dataset, 32, length=5)]

    valid = [v[dataset.valid_mask(v)[None]] for v in values]
    assert all(-40 < float(v.median()) < 10 for v in valid if v.numel())


def test_uc_merced_tiff_chips_form_one_chip_group(shared_data):
    from dspt_geo.data import ChipDataset, ChipGroup, ChipStream, discover_groups

    (group,) = discover_groups([shared_data / 'labelled/classification/ucmerced'])

    assert isinstance(group, ChipGroup)
    assert (group.name, len(group.chips)) == ('3band-uint8', 420)
    sides = {side for chip in group.chips for side in (chip.width, chip.height)}
    assert min(sides) < 256 == max(sides), 'a few UC Merced chips are not 256 px'
    samples = list(ChipStream(ChipDataset(group), size=256, length=24))
    assert all(s['image'].shape == (3, 256, 256) and s['valid'].all() for s in samples)
