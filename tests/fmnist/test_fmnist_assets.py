"""The committed Fashion-MNIST assets measured on the real test split (Debian dataset-fashion-mnist)."""
import pytest
import torch

from dimo_fmnist.classifier import features_and_probs, load_classifier
from dimo_fmnist.fashion_mnist import default_root, load_split
from dimo_fmnist.metrics import ImageQuality
from dimo_fmnist.patch_vq import PatchVQTokenizer

N = 500  # test images used here (the first ones of the split)


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist_installed():
    """A missing data package fails these tests (a skip would pass CI on an incomplete install)."""
    if not (default_root() / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"no Fashion-MNIST under {default_root()}: install the Debian package dataset-fashion-mnist "
                    f"(apt-get install -y dataset-fashion-mnist, as README's install block does)", pytrace=False)


@pytest.fixture(scope="module")
def test_split():
    images, labels = load_split("test")
    return images[:N], labels[:N]


@pytest.fixture(scope="module")
def tokenizer():
    return PatchVQTokenizer.load()


def test_tokenizer_reconstructs_test_images(tokenizer, test_split):
    images, _ = test_split
    codes = tokenizer.encode(images)
    assert codes.shape == (N, 49) and tokenizer.vocab_size == 256
    mse = ((tokenizer.decode(codes) - images) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 21.0  # dB; 21.5 over the whole split when built


def test_classifier_accuracy_and_reference_statistics(test_split):
    net, mean, cov, meta = load_classifier()
    images, labels = test_split
    feats, probs = features_and_probs(net, images)
    assert (probs.argmax(1) == labels).double().mean() > 0.89 and meta["test_accuracy"] > 0.9
    assert mean.shape == (128,) and cov.shape == (128, 128) and meta["reference_count"] == 10_000
    assert (feats.mean(0) - mean).norm() < 0.1 * mean.norm()  # a subset agrees with the committed stats


def test_metric_ranks_real_tokens_above_random_tokens(tokenizer, test_split):
    images, labels = test_split
    metric = ImageQuality(tokenizer, real_samples=N)
    real = metric(tokenizer.encode(images), labels)
    noise = metric(torch.randint(0, 256, (N, 49), generator=torch.Generator().manual_seed(0)), labels)
    assert real["class_accuracy"] > 0.8 and noise["class_accuracy"] < 0.3
    assert real["fd_fmnist_cnn"] < 0.1 * noise["fd_fmnist_cnn"]
    assert real["precision"] > 0.5 > noise["precision"] and real["coverage"] > 0.5 > noise["coverage"]
    assert real["is_fmnist_cnn"] > 5
