"""Suite ids and cell ids are a contract: published folders name them, and a result folder resumes
by cell id. So every shipped and published suite must keep the ids it had when they were written
down here (computed by the code of the time, not by the code under test). A refactoring of how the
resolved suite is represented must not change its canonical JSON by a byte.

A new suite file needs its ids recorded here (`benchsuite validate` prints the suite id).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from benchsuite.plugins import default_registry, load_registry
from benchsuite.resolved import content_hash, expand, suite_from_record
from benchsuite.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry(include_entry_points=False)

# path: (suite id, cells, digest of every cell's id and seed in expansion order)
EXPECTED = {
    "leaderboards/fashion-mnist-depth-lenet-cpu/suite.yaml": ("0661e7947708949a", 256, "2ce5b348b10cd375"),
    "leaderboards/fashion-mnist-depth-lenet/suite.yaml": ("049e26567352c3cf", 512, "6a639195c58525b5"),
    "leaderboards/fashion-mnist-depth-mlp-h100/suite.yaml": ("76f805bd8b1c8598", 512, "de67f5a9fd995fd4"),
    "leaderboards/fashion-mnist-depth-mlp/suite.yaml": ("8353542c85aaf9bb", 512, "d476d280273e2952"),
    "leaderboards/fashion-mnist-width-lenet/suite.yaml": ("8ee741cc3d922b78", 768, "40c77c56a2777277"),
    "leaderboards/fashion-mnist-width-lenet-cpu/suite.yaml": ("47575f751312ff87", 160, "89c4449e8c1e0bdc"),
    "leaderboards/fashion-mnist-width-mlp-h100/suite.yaml": ("0cc3526c5815ec46", 512, "85f2be4632a3d570"),
    "leaderboards/fashion-mnist-width-mlp/suite.yaml": ("525b9f6ad6c6831a", 512, "1d86c1b0344cb405"),
    "leaderboards/subset-mcmc-fashion-mnist-n512-slice/suite.yaml": ("cd0780d86b654a21", 30, "e5934fb24fda6628"),
    "leaderboards/subset-mcmc-validation/suite.yaml": ("c528032fbcc18487", 40, "1c9d55dcca006476"),
    "suites/bench/gnc-mlp.yaml": ("1392a8af643c57f1", 1, "b40cdff8b5cea74c"),
    "suites/diagnostics/fashion-mnist.yaml": ("80917a50c49cf97a", 320, "2efc493dc2ff9c31"),
    "leaderboards/diagnostics-fashion-mnist/suite.yaml": ("80917a50c49cf97a", 320, "2efc493dc2ff9c31"),
    "suites/bench/sgd-mlp.yaml": ("a410981a13160757", 1, "aee311298de65369"),
    "suites/fashion-mnist-depth.yaml": ("3bde2e7296906578", 64, "3700f78eb8e9117e"),
    "suites/fashion-mnist-width.yaml": ("be67a93a54750433", 64, "3f50317af7ecdadb"),
    "suites/peleg-hein/cifar10/batch-size.yaml": ("d486379aafc4b448", 80, "246617e498005a76"),
    "suites/peleg-hein/cifar10/depth-lenet.yaml": ("7c168164f8f9dfeb", 384, "eb1e4dae5a8ffb65"),
    "suites/peleg-hein/cifar10/depth-mlp.yaml": ("b40c279da36221a0", 384, "11935fd6f46a8ff0"),
    "suites/peleg-hein/cifar10/depth-resnet4.yaml": ("a14da55e17fb8df6", 288, "9577a05c20f7dd2c"),
    "suites/peleg-hein/cifar10/priors.yaml": ("0b321d1af132013c", 128, "0bb6ec6549c124de"),
    "suites/peleg-hein/cifar10/sgd-epochs.yaml": ("e6a380d1b582da73", 80, "bc6e955653be03be"),
    "suites/peleg-hein/cifar10/width-lenet.yaml": ("46bb6a355912649f", 576, "7f958b27f662c711"),
    "suites/peleg-hein/cifar10/width-mlp.yaml": ("6a60672d5f96e751", 384, "dc6fb39c401365ee"),
    "suites/peleg-hein/cifar10/width-resnet4.yaml": ("2bc803964192956c", 384, "c6b542258f75a8e3"),
    "suites/peleg-hein/fashion-mnist/batch-size.yaml": ("f95e0249ede75e8e", 80, "337e101599f6a4d2"),
    "suites/peleg-hein/fashion-mnist/depth-lenet.yaml": ("049e26567352c3cf", 512, "6a639195c58525b5"),
    "suites/peleg-hein/fashion-mnist/depth-mlp.yaml": ("8353542c85aaf9bb", 512, "d476d280273e2952"),
    "suites/peleg-hein/fashion-mnist/depth-resnet4.yaml": ("5633c48c761dcbce", 384, "b9e3c972a5d115f9"),
    "suites/peleg-hein/fashion-mnist/priors.yaml": ("abe743f19d1643ce", 128, "49b4947cc765014e"),
    "suites/peleg-hein/fashion-mnist/sgd-epochs.yaml": ("63979090c3464ab0", 80, "da60ae671c1d6469"),
    "suites/peleg-hein/fashion-mnist/width-lenet.yaml": ("8ee741cc3d922b78", 768, "40c77c56a2777277"),
    "suites/peleg-hein/fashion-mnist/width-mlp.yaml": ("525b9f6ad6c6831a", 512, "1d86c1b0344cb405"),
    "suites/peleg-hein/fashion-mnist/width-resnet4.yaml": ("256949239eddaccc", 512, "3579ed127ce5de09"),
    "suites/peleg-hein/mnist/batch-size.yaml": ("69aa374682991fef", 80, "a546dba1cb426c07"),
    "suites/peleg-hein/mnist/depth-lenet.yaml": ("c4165782edcaebf1", 512, "dac1be3e99596a89"),
    "suites/peleg-hein/mnist/depth-mlp.yaml": ("8ae5c297713a22bd", 512, "4889e3ab01ed500d"),
    "suites/peleg-hein/mnist/depth-resnet4.yaml": ("456a04d71516b5bc", 384, "ad635cd6337aa853"),
    "suites/peleg-hein/mnist/priors.yaml": ("80a2ba7f47292373", 128, "bdc7e0c2d24a55c3"),
    "suites/peleg-hein/mnist/sgd-epochs.yaml": ("ef436d7f7d439489", 80, "28219141dbc3ce83"),
    "suites/peleg-hein/mnist/width-lenet.yaml": ("b57d977b0f92862e", 768, "e0ef624a008d921c"),
    "suites/peleg-hein/mnist/width-mlp.yaml": ("56bdfa411dfd2484", 512, "03641bc39445b391"),
    "suites/peleg-hein/mnist/width-resnet4.yaml": ("6f9315843e4948af", 512, "76a81d20bf2a665a"),
    "suites/peleg-hein/reduced/fashion-mnist-depth-lenet.yaml": ("788e76089791093f", 256, "01b5be83434a44ff"),
    "suites/peleg-hein/reduced/fashion-mnist-depth-mlp.yaml": ("e2f0048a42362588", 160, "6ad3e673274542f7"),
    "suites/peleg-hein/reduced/fashion-mnist-width-lenet.yaml": ("449f49ee75193330", 160, "b1aec89a9c9845f6"),
    "suites/peleg-hein/reduced/fashion-mnist-width-mlp.yaml": ("6d574afad8f241d0", 160, "57724d0715ab6167"),
    "suites/quickstart.yaml": ("d30bb02c8efc462d", 144, "48e61d7e0fdcbc48"),
    "suites/subset-mcmc/fashion-mnist-n512.yaml": ("59421e10793a6f3b", 240, "46366d18a51d7092"),
    "suites/subset-mcmc/fashion-mnist-n512-slice.yaml": ("cd0780d86b654a21", 30, "e5934fb24fda6628"),
    "suites/subset-mcmc/fashion-mnist-n512-width-slice.yaml": ("cb012e1e5a97f370", 60, "7218d90b890c515b"),
    "suites/subset-mcmc/fashion-mnist-n128-width-slice.yaml": ("7892f35ea53aa53a", 36, "5ad401de3726e9d5"),
    "suites/subset-mcmc/fashion-mnist-n256-width-slice.yaml": ("2fbdd1eb5ba1616b", 48, "d94fd8802a3bba63"),
    "leaderboards/subset-mcmc-fashion-mnist-n256-width-slice/suite.yaml": ("2fbdd1eb5ba1616b", 48, "d94fd8802a3bba63"),
    "leaderboards/subset-mcmc-fashion-mnist-n512-width-slice/suite.yaml": ("cb012e1e5a97f370", 60, "7218d90b890c515b"),
    "suites/validation/subset-vs-gnc.yaml": ("c528032fbcc18487", 40, "1c9d55dcca006476"),
    "suites/validation/subset-vs-gnc-lenet.yaml": ("afd685804fdcb87e", 20, "ecd6af41b40a2dd5"),
    "suites/validation/gnc-independent-lenet.yaml": ("2e1bcc995be0d732", 2, "4fb41d7274ef5946"),
    "leaderboards/subset-mcmc-validation-lenet/suite.yaml": ("afd685804fdcb87e", 20, "ecd6af41b40a2dd5"),
    "suites/subset-mcmc/fashion-mnist-n512-depth-slice.yaml": ("7c86d4c251f658de", 60, "5a054b0ae852ef92"),
    "leaderboards/subset-mcmc-fashion-mnist-n512-depth-slice/suite.yaml": ("7c86d4c251f658de", 60, "5a054b0ae852ef92"),
}  # fmt: skip

# Suites that need installed plugins (benchsuite-lion, benchsuite-zoo): their ids also depend on
# what those plugins declare (a tuned entry's search space is part of its cells' identity).
WITH_PLUGINS = {
    "suites/zoo/digits.yaml": ("f23e266d4fe3712b", 2176, "462a326bac9cd238"),
    "suites/zoo/fashion-mnist.yaml": ("69a8f6c0923cfae7", 4896, "07e18428160eb963"),
    "suites/zoo/fashion-mnist-slice.yaml": ("56e3decf1692396d", 204, "83f1f5f0f0d7c878"),
    "suites/zoo/fashion-mnist-mlp-narrow.yaml": ("c335a52cf42b414a", 1632, "7860e88777439f63"),
    "suites/zoo/fashion-mnist-stacked.yaml": ("963f87cccafd040e", 3312, "52778a9aaf68b26d"),
    "suites/zoo/fashion-mnist-lenet.yaml": ("a2e60de15a191675", 1632, "4d19f92914d13a95"),
    "suites/zoo/fashion-mnist-mlp-wide.yaml": ("7b663dd6216907ee", 1632, "0c1e62621b469bf9"),
    "leaderboards/zoo-fashion-mnist-slice/suite.yaml": ("56e3decf1692396d", 204, "83f1f5f0f0d7c878"),
    "leaderboards/zoo-fashion-mnist-mlp-narrow/suite.yaml": ("c335a52cf42b414a", 1632, "7860e88777439f63"),
    "leaderboards/zoo-fashion-mnist-stacked/suite.yaml": ("963f87cccafd040e", 3312, "52778a9aaf68b26d"),
    "leaderboards/zoo-fashion-mnist-lenet/suite.yaml": ("a2e60de15a191675", 1632, "4d19f92914d13a95"),
    "leaderboards/zoo-fashion-mnist-mlp-wide/suite.yaml": ("7b663dd6216907ee", 1632, "0c1e62621b469bf9"),
    "leaderboards/zoo-fashion-mnist/suite.yaml": ("69a8f6c0923cfae7", 4896, "07e18428160eb963"),
}  # fmt: skip

# Published before the protocol-exactness change: their READMEs say that suite.yaml now resolves to
# a different id; the id they name is the one their suite.json (the stored record) hashes to.
RECORD_ONLY = "resolves to a different suite id"
LEADERBOARDS = sorted(p.parent for p in (ROOT / "leaderboards").glob("*/suite.yaml"))


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_suite_file_has_recorded_ids():
    found = {_relative(p) for p in (ROOT / "suites").rglob("*.yaml")}
    found |= {_relative(p / "suite.yaml") for p in LEADERBOARDS}
    assert found == set(EXPECTED) | set(WITH_PLUGINS), "record the ids of new suite files in EXPECTED"


@pytest.mark.parametrize("relative", sorted(EXPECTED) + sorted(WITH_PLUGINS))
def test_suite_and_cell_ids_unchanged(relative):
    if relative in WITH_PLUGINS:
        pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")
        suite_id, count, digest = WITH_PLUGINS[relative]
        suite = load_suite(ROOT / relative, default_registry())
    else:
        suite_id, count, digest = EXPECTED[relative]
        suite = load_suite(ROOT / relative, REGISTRY)
    assert suite.suite_id == suite_id
    cells = expand(suite)
    assert len(cells) == count
    joined = "".join(f"{cell.cell_id}:{cell.seed};" for cell in cells)
    assert hashlib.sha256(joined.encode()).hexdigest()[:16] == digest
    # the record a run stores rebuilds the very suite and cells (publish checks a grown folder by it)
    rebuilt = suite_from_record(json.loads(json.dumps(suite.resolved)))
    assert rebuilt.suite_id == suite_id
    assert "".join(f"{cell.cell_id}:{cell.seed};" for cell in expand(rebuilt)) == joined


@pytest.mark.parametrize("folder", LEADERBOARDS, ids=lambda p: p.name)
def test_published_readme_names_the_suite_id(folder):
    """The README's id is the published record's (suite.json) and, unless the README says it no
    longer reproduces, the id its suite.yaml validates to."""
    readme = (folder / "README.md").read_text()
    named = set(re.findall(r"suite id `([0-9a-f]{16})`", readme))
    assert len(named) == 1, named
    (suite_id,) = named
    assert content_hash(json.loads((folder / "suite.json").read_text())) == suite_id
    if RECORD_ONLY not in readme:
        recorded = EXPECTED.get(_relative(folder / "suite.yaml")) or WITH_PLUGINS[_relative(folder / "suite.yaml")]
        assert recorded[0] == suite_id


def test_the_zoo_blocks_are_cells_of_the_full_zoo_suite():
    """One result folder serves the narrow zoo suite and the full one (suites/zoo/README.md): every
    cell of the block, published first, is a cell of the full suite with the same id and seed."""
    pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")
    registry = default_registry()
    full = {(c.cell_id, c.seed) for c in expand(load_suite(ROOT / "suites/zoo/fashion-mnist.yaml", registry))}
    block = {(c.cell_id, c.seed) for c in expand(load_suite(ROOT / "suites/zoo/fashion-mnist-mlp-narrow.yaml", registry))}
    assert len(block) == 1632 and block < full


@pytest.mark.parametrize("block", ["mlp-narrow", "stacked", "lenet", "mlp-wide"])
def test_the_zoo_blocks_cells_are_cells_of_the_full_suite(block):
    """The blocks' published folders seed the full suite's run (`run --reuse`): every cell of a
    block must be a cell of suites/zoo/fashion-mnist.yaml, the same cell id and seed."""
    pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")
    full = {(c.cell_id, c.seed) for c in expand(load_suite(ROOT / "suites/zoo/fashion-mnist.yaml", default_registry()))}
    cells = expand(load_suite(ROOT / f"suites/zoo/fashion-mnist-{block}.yaml", default_registry()))
    assert cells and all((c.cell_id, c.seed) in full for c in cells)


def test_the_three_architecture_blocks_make_the_full_zoo_suite():
    """The MLP-narrow, MLP-wide and LeNet blocks share no cell and together are the full suite,
    so their three published folders seed its run with nothing left to compute."""
    pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")
    registry = default_registry()

    def cells(name: str) -> set[tuple[str, int]]:
        return {(c.cell_id, c.seed) for c in expand(load_suite(ROOT / f"suites/zoo/{name}.yaml", registry))}

    blocks = [cells(f"fashion-mnist-{block}") for block in ("mlp-narrow", "mlp-wide", "lenet")]
    assert sum(map(len, blocks)) == len(set().union(*blocks)) == len(cells("fashion-mnist")) == 4896
    assert set().union(*blocks) == cells("fashion-mnist")
