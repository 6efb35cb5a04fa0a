"""Channel packing: image and mask <-> the model's two channels in [-1, 1]."""

import pytest
import torch

from fetalgen.diffusion.channels import pack, unpack


def test_pack_maps_unit_range_to_signed_channels():
    image = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    x = pack(image, mask)
    assert x.shape == (1, 2, 2, 2)
    assert torch.equal(x[0, 0], torch.tensor([[-1.0, -0.5], [0.0, 1.0]]))
    assert torch.equal(x[0, 1], torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))


def test_round_trip_and_ranges():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 1, 8, 8, generator=g)
    mask = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    x = pack(image, mask)
    assert x.min() >= -1 and x.max() <= 1
    image2, channel = unpack(x)
    torch.testing.assert_close(image2, image)
    assert torch.equal(channel, mask * 2 - 1)
    assert torch.equal(channel > 0, mask.bool())


def test_pack_accepts_bool_mask():
    image = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, True]]]])
    assert torch.equal(pack(image, mask)[0, 1], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_unpack_clamps_out_of_range_samples():
    x = torch.tensor([[[[-1.5, 2.0]], [[3.0, -4.0]]]])  # [1,2,1,2]
    image, channel = unpack(x)
    assert torch.equal(image, torch.tensor([[[[0.0, 1.0]]]]))
    assert torch.equal(channel, torch.tensor([[[[1.0, -1.0]]]]))


@pytest.mark.parametrize(
    "image,mask",
    [(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)), (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 3))],
)
def test_pack_rejects_bad_shapes(image, mask):
    with pytest.raises(ValueError):
        pack(image, mask)


def test_unpack_rejects_wrong_channel_count():
    with pytest.raises(ValueError):
        unpack(torch.zeros(1, 3, 4, 4))
