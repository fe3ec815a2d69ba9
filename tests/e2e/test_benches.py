"""Every script in bench/ starts as the README runs it and prints its ratio lines, at its smallest settings.

The figures are not checked (tiny models, one short run): this catches a bench that no longer starts or
no longer finishes, before someone needs its numbers.
"""

from __future__ import annotations

import re
import subprocess

import hostenv
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.newest_host]

BENCH = hostenv.REPO / "bench"
NUMBER = r"\d+\.\d\d"
# script -> (its smallest settings, a line that carries a measured ratio, how many such lines it prints)
SMALLEST = {
    "codec_training.py": (["--sizes", "64", "--steps", "2", "--vaes", "wan21", "--decoder-width", "0.125"],
                          rf"^Qwen-Image \(Wan 2\.1 VAE\) +64 +{NUMBER} +-?\d+ +{NUMBER}$", 1),
    "combinations.py": (["--smoke", "--size", "64", "--steps", "2", "--repeats", "1"],
                        rf"^\S.{{21}} +{NUMBER} +{NUMBER}", 9),  # each graph against plain
    "decode.py": (["--sizes", "64", "--augmentations", "1", "--repeats", "1", "--precisions", "fp32"],
                  rf"^ +(SD|FLUX) +64 +1 +\S+ +{NUMBER} +{NUMBER} +{NUMBER} ", 2),
    "flux.py": (["--sizes", "64", "--steps", "1", "--repeats", "1"], rf"^ +64 +[\w .-]+? +\d+\.\d{{3}} +{NUMBER} ", 3),
    "guidance.py": (["--smoke", "--steps", "4", "--repeats", "1", "--train-steps", "1"],
                    rf"guided step \d+\.\d{{3}} s \({NUMBER}x\)", 1),
    "patches.py": (["--smoke", "--size", "64", "--steps", "2", "--repeats", "1"],
                   rf"^\S.*? +[13] +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$", 6),
    "rgba_vae.py": (["--sizes", "64", "--repeats", "1"],
                    rf"^\S.*? +64 +{NUMBER} +-?\d+ +{NUMBER} +-?\d+ +{NUMBER}$", 2),  # each RGBA VAE against RGB
    "train_ddp.py": (["--size", "64", "--images", "2", "--batch", "2", "--steps", "2", "--rounds", "1"],
                     rf"2 vs 1: {NUMBER}x", 1),
}


def test_every_bench_has_smallest_settings_here():
    """Every script, that is: bench/_*.py are what the scripts share."""
    assert sorted(path.name for path in BENCH.glob("*.py") if not path.name.startswith("_")) == sorted(SMALLEST)


@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_bench_starts_and_prints_its_ratios(script, fixture_cache):
    settings, ratio_line, count = SMALLEST[script]
    done = subprocess.run([str(hostenv.venv_python()), "-P", str(BENCH / script), *settings], cwd=hostenv.REPO,
                          capture_output=True, text=True, timeout=600, env=hostenv.host_environment())
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    found = re.findall(ratio_line, done.stdout, re.MULTILINE)
    assert len(found) == count, f"{script}: {len(found)} ratio lines, expected {count}:\n{done.stdout}"
