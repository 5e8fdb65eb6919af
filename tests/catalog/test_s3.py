"""The catalog on S3: a real S3 protocol server on loopback (moto's), reached through delta-rs with the
credentials and endpoint in the environment, as on a cluster; two writers at once."""
import os
import socket

import pytest

from catalog import publish, query
from catalog.rows import ok_row
from catalog.store import Catalog
from tests.fixtures.synthetic import result

from .writers import in_processes

@pytest.fixture(scope="module")
def bucket():
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # as a cluster's workers get them; spawned writers inherit them
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="team")
    yield "s3://team"
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_write_query_publish_on_s3(bucket, tmp_path):
    cat = Catalog(f"{bucket}/catalog")
    assert not cat.local
    cat.import_reference("catalog/data/published_super_weights.csv")
    cat.write_scan(ok_row(result("huggyllama/llama-7b", 1, coords=[(2, 3968, 7003, "negligible")])))
    assert query.run(cat, "SELECT model FROM scans")[1] == [("huggyllama/llama-7b",)]
    cols, rows = query.run(cat, "SELECT disagreement FROM disagreements")
    assert rows == [("published, scan says negligible",)]
    s = publish.publish(cat, tmp_path / "index", workers=1)
    assert s.models == 1 and (tmp_path / "index" / "index.md").exists()


def test_two_writers_at_once_on_s3(bucket):
    location = f"{bucket}/two-writers"
    in_processes(location, 2, 8)
    cat = Catalog(location)
    assert query.run(cat, "SELECT count(*), count(DISTINCT scan_id) FROM scans_all")[1] == [(16, 16)]
    assert query.run(cat, "SELECT count(*) FROM candidates_all")[1] == [(160,)]
