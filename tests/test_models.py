"""Every registered model: shapes, gradients, the registry, the paper's ImageNet adaptation."""
import pytest
import torch

import models
from errors import UserError
from models.torchvision_models import adapt_imagenet_state_dict


@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", models.list_models())
def test_forward_and_backward_give_every_parameter_a_gradient(name, in_channels, size):
    torch.manual_seed(0)
    model = models.get_model(name, num_classes=7, in_channels=in_channels, pretrained=False)
    logits = model(torch.randn(4, in_channels, size, size))
    assert logits.shape == (4, 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UserError, match="known: AllCNN, MobileNet_v2, ResNet18, ResNet9, SmallCNN"):
        models.get_model("ResNet50", 10, 3)


def test_scratch_models_refuse_pretrained():
    with pytest.raises(UserError, match="no pretrained weights"):
        models.get_model("ResNet9", 10, 3, pretrained=True)


@pytest.mark.parametrize("name,key,head", [("ResNet18", "conv1.weight", "fc"),
                                           ("MobileNet_v2", "features.0.0.weight", "classifier.1")])
def test_imagenet_weights_adapted_as_the_paper_does(name, key, head):
    import torchvision
    builder = {"ResNet18": torchvision.models.resnet18, "MobileNet_v2": torchvision.models.mobilenet_v2}[name]
    imagenet = builder(num_classes=1000).state_dict()  # the shapes of the real weights
    adapted = adapt_imagenet_state_dict(imagenet, key, head, in_channels=1, num_classes=10)
    assert torch.allclose(adapted[key], imagenet[key].sum(1, keepdim=True) / 3)
    assert torch.equal(adapted[f"{head}.weight"], imagenet[f"{head}.weight"][:10])
    assert torch.equal(adapted[f"{head}.bias"], imagenet[f"{head}.bias"][:10])
    model = models.get_model(name, 10, 1, pretrained=False)
    model.load_state_dict(adapted)  # fits the 1-channel, 10-class model exactly


def test_unreachable_imagenet_weights_suggest_no_pretrained(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match="--no-pretrained"):
        models.get_model("ResNet18", 10, 3)


@pytest.mark.parametrize("name,in_channels,size,count", [
    ("ResNet9", 3, 32, 2_440_266), ("ResNet9", 1, 28, 2_439_114),
    ("AllCNN", 3, 32, 1_620_010), ("AllCNN", 1, 28, 1_618_282)])
def test_authors_architectures_have_their_parameter_counts(name, in_channels, size, count):
    """docs/METHOD.md lists these counts from the authors' own classes (10 classes)."""
    model = models.get_model(name, 10, in_channels, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 10)
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_authors_resnet9_batchnorm_momentum():
    model = models.get_model("ResNet9", 10, 3, pretrained=False)
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.9}
