"""Helpers of bench/serve_load.py: stdlib-only statistics and input reading, failure reports."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import serve_load  # noqa: E402


@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy(q):
    values = sorted(np.random.default_rng(0).exponential(size=101).tolist())
    assert serve_load.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert serve_load.percentile([3.0], q) == 3.0


def test_read_smiles_finds_the_column_in_plain_and_gzipped_csv(tmp_path):
    text = "id,SMILES\n1,CCO\n2,c1ccccc1\n3,CCN\n"
    (tmp_path / "a.csv").write_text(text)
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        handle.write(text)
    assert serve_load._read_smiles(tmp_path / "a.csv") == ["CCO", "c1ccccc1", "CCN"]
    assert serve_load._read_smiles(tmp_path / "a.csv.gz", limit=2) == ["CCO", "c1ccccc1"]


def test_a_server_that_exits_is_reported_with_its_output(tmp_path):
    command = [sys.executable, "-c", "import sys; print('no module named x', file=sys.stderr); sys.exit(1)"]
    server = serve_load.Server("peer", command, {}, serve_load.free_port(), "/ready", tmp_path)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)peer server exited with code 1.*no module named x"):
            server.wait_ready(timeout_s=30)
    finally:
        server.stop()


def test_bare_peers_answer_the_same_fixed_body(tmp_path):
    import json
    import urllib.request

    for kind in ("fastapi", "asgi"):
        port = serve_load.free_port()
        command = [sys.executable, serve_load.__file__, "serve-bare", "--kind", kind, "--port", str(port)]
        server = serve_load.Server(kind, command, {"PATH": "/usr/bin:/bin"}, port, "/ready", tmp_path)
        try:
            server.wait_ready(timeout_s=60)
            request = urllib.request.Request(server.url + "/bare", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=10) as r:
                assert json.loads(r.read()) == serve_load.BARE_BODY
        finally:
            server.stop()
