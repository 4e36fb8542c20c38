"""The Fashion-MNIST bench: idx reading, the patch tokenizer, the dataset, metrics, grid and floor."""
import pytest
import torch

from dimo_core.errors import ConfigError
from dimo_fmnist.data import FashionMNISTTokens
from dimo_fmnist.fashion_mnist import load_split, write_split
from dimo_fmnist.grid import ImageGrid
from dimo_fmnist.metrics import frechet_distance, inception_score, prdc
from dimo_fmnist.patch_vq import PatchVQTokenizer, fit_codebook, from_patches, to_patches
from dimo_fmnist.testing import random_fashion_mnist


@pytest.fixture


def fake_fmnist(tmp_path):
    """A folder in the Debian package's layout: 40 train and 20 test images of 10 classes."""
    return random_fashion_mnist(tmp_path, train=40, test=20)


def test_idx_reader(fake_fmnist):
    images, labels = load_split("test", str(fake_fmnist))
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert labels.tolist() == [i % 10 for i in range(20)]


def test_missing_dataset_names_the_debian_package(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_split("train", str(tmp_path))


def test_patches_round_trip_and_exact_codes():
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(from_patches(to_patches(images, 4), 4, 1, 28, 28), images)
    codebook = torch.rand(32, 16)
    tok = PatchVQTokenizer(codebook)
    codes = torch.randint(0, 32, (3, 49))
    assert torch.equal(tok.encode(tok.decode(codes)), codes)  # codebook images encode to their codes
    assert tok.vocab_size == 32 and tok.mask_id is None and tok.seq_len == 49
    with pytest.raises(ValueError, match="mask id"):
        tok.decode(torch.full((1, 49), 32))


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    points = (centres[torch.arange(300) % 3] + 0.1 * torch.randn(300, 2, generator=g))
    found = fit_codebook(points, 3, 10, g)
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def test_dataset_encodes_each_split_once(fake_fmnist):
    class CountingTokenizer(PatchVQTokenizer):
        calls = 0

        def encode(self, images):
            CountingTokenizer.calls += 1
            return super().encode(images)

    data = FashionMNISTTokens(CountingTokenizer(torch.rand(8, 16)), str(fake_fmnist))
    g = torch.Generator().manual_seed(0)
    codes, labels = data.sample(16, g)
    data.sample(16, g)
    assert codes.shape == (16, 49) and labels.shape == (16,) and CountingTokenizer.calls == 1
    data.sample(4, g, split="test")
    assert CountingTokenizer.calls == 2


def test_frechet_distance_closed_form():
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = ((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()  # diagonal Gaussians
    assert frechet_distance(m1, torch.diag(v1), m2, torch.diag(v2)) == pytest.approx(float(expected), abs=1e-9)
    a = torch.randn(50, 3, dtype=torch.float64)
    cov = a.T @ a / 50
    assert frechet_distance(m1, cov, m1, cov) == pytest.approx(0.0, abs=1e-9)


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(3, 1)
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.full((30, 10), 0.1)) == pytest.approx(1.0, rel=1e-6)


def test_prdc_identical_and_disjoint():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    same = prdc(real, real.clone(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(6 / 5)  # each sample also lies in its own ball: (k + 1) / k
    fresh = prdc(real, torch.randn(200, 4, generator=g), k=5)
    assert 0.8 < fresh["density"] < 1.2 and fresh["precision"] > 0.8 and fresh["coverage"] > 0.8
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_grid_writer(tmp_path):
    tok = PatchVQTokenizer(torch.rand(8, 16))
    rows = {"teacher 1 step": torch.randint(0, 8, (4, 49)), "student": torch.randint(0, 8, (4, 49))}
    paths = ImageGrid(tok, ("a", "b", "c", "d"))(rows, torch.tensor([0, 1, 2, 3]), str(tmp_path))
    assert paths == [str(tmp_path / "samples.png")]
    from PIL import Image
    width, height = Image.open(paths[0]).size
    assert width > height > 100  # 4 columns x 2 rows


def test_tokenizer_floor_equals_raw_scores_for_a_lossless_tokenizer(tmp_path):
    """Images made of codebook patches pass through the tokenizer unchanged, so the tokenized floor
    must score exactly what the raw images score; balanced draws take every class equally."""
    from dimo_fmnist.floor import balanced_draw, floor
    g = torch.Generator().manual_seed(0)
    tok = PatchVQTokenizer(torch.randint(0, 256, (8, 16), generator=g).float() / 255)
    tok.save(tmp_path / "vq.safetensors")
    for split, n in (("train", 60), ("test", 30)):
        images = tok.decode(torch.randint(0, 8, (n, 49), generator=g))
        write_split(tmp_path, split, (images[:, 0] * 255).round().to(torch.uint8).numpy(), (torch.arange(n) % 10).numpy())
    labels = load_split("train", str(tmp_path))[1]
    pick = balanced_draw(labels, 3, seed=0)
    assert len(set(pick.tolist())) == 30 and torch.bincount(labels[pick]).tolist() == [3] * 10
    result = floor(tmp_path / "vq.safetensors", samples=30, draws=2, root=str(tmp_path))
    assert result["tokenized"] == result["raw"] and len(result["raw"]) == 2
    assert result["raw"][0]["fd_fmnist_cnn"] != result["raw"][1]["fd_fmnist_cnn"]  # two different draws
