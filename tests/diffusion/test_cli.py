import argparse
import json

import numpy as np
import pytest

from samplax.diffusion import cli


def _parser():
    p = argparse.ArgumentParser(prog="samplax")
    cli.add_subparser(p.add_subparsers(dest="command"))
    return p


def test_cli_sample_gmm(tmp_path, capsys):
    out = tmp_path / "s.npz"
    args = _parser().parse_args(["diffusion", "sample", "--model", "ring8", "--n", "64", "--nfe", "8",
                                 "--solver", "dpmpp_2m", "--out", str(out)])
    assert cli.run(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_model_evals"] <= 8
    assert np.load(out)["samples"].shape == (64, 2)


def test_cli_bad_input():
    with pytest.raises(SystemExit):
        _parser().parse_args(["diffusion", "sample", "--model", "nope"])
    args = _parser().parse_args(["diffusion", "sample", "--model", "grid25", "--n", "0"])
    with pytest.raises(ValueError, match="--n"):
        cli.run(args)
