"""helpers.loading.architectures: the published full-size configs, built on meta, and a saved folder's."""

import pytest
import torch

from helpers.loading import architectures


@pytest.mark.parametrize("family, billions", [("large", 8.06), ("medium", 2.24)])
def test_full_size_transformer_on_meta_takes_no_memory(family, billions):
    with torch.device("meta"):
        model = architectures.build_component("transformer", family)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)


def test_build_from_folder_matches_the_saved_stand_in(tiny_pipe, tiny_dir):
    for name in architectures.COMPONENTS:
        with torch.device("meta"):
            built = architectures.build_from_folder(tiny_dir, name)
        loaded = getattr(tiny_pipe, name)
        assert [(n, p.shape) for n, p in built.named_parameters()] == [
            (n, p.shape) for n, p in loaded.named_parameters()], name


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown component"):
        architectures.build_component("unet")
    with pytest.raises(ValueError, match="Unknown family"):
        architectures.build_component("transformer", "huge")
    assert set(architectures.PRESET_FAMILY.values()) <= set(architectures.FAMILIES)
