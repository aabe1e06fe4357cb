"""dnnlib.util: open_url against a real loopback HTTP server, the download cache, file URLs, atomic writes,
and objects by name."""
import hashlib
import http.server
import json
import math
import os
import pathlib
import threading

import numpy as np
import pytest

from dnnlib import util

PAYLOAD = bytes(range(256)) * 37


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /data.bin (200), /flaky.bin (500 twice, then 200), /broken.bin (always 503),
    /missing.bin (404), /short.bin (first body truncated, then 200)."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        server = self.server
        with server.lock:
            server.counts[self.path] = server.counts.get(self.path, 0) + 1
            n = server.counts[self.path]
        if self.path == '/data.bin' or (self.path == '/flaky.bin' and n > 2):
            self._send(200, PAYLOAD)
        elif self.path == '/flaky.bin':
            self._send(500, b'try again')
        elif self.path == '/broken.bin':
            self._send(503, b'down')
        elif self.path == '/short.bin':
            if n == 1:  # announce the full length, send half, close
                self.send_response(200)
                self.send_header('Content-Length', str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
                self.close_connection = True
            else:
                self._send(200, PAYLOAD)
        else:
            self._send(404, b'not found')

    def _send(self, status, body):
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.counts = {}
    httpd.lock = threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.02), daemon=True)
    thread.start()
    httpd.base = f'http://127.0.0.1:{httpd.server_address[1]}'
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _read(f):
    with f:
        return f.read()


def test_download_is_cached_under_md5_of_url(server, tmp_path):
    url = server.base + '/data.bin'
    assert _read(util.open_url(url, cache_dir=str(tmp_path))) == PAYLOAD
    assert server.counts['/data.bin'] == 1
    # Second open is served from the cache: the server sees no new request.
    assert _read(util.open_url(url, cache_dir=str(tmp_path))) == PAYLOAD
    path = util.open_url(url, cache_dir=str(tmp_path), return_filename=True)
    assert server.counts['/data.bin'] == 1
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) == hashlib.md5(url.encode()).hexdigest() + '_data.bin'
    assert pathlib.Path(path).read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]  # no temp files left


def test_default_cache_dir_follows_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    assert util.make_cache_dir_path('downloads') == str(tmp_path / 'cache' / 'downloads')
    path = util.open_url(server.base + '/data.bin', return_filename=True)
    assert os.path.dirname(path) == str(tmp_path / 'cache' / 'downloads')
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert util.make_cache_dir_path('x') == str(tmp_path / 'home' / '.cache' / 'dnnlib' / 'x')


def test_uncached_download_is_in_memory(server, tmp_path):
    url = server.base + '/data.bin'
    for expected_count in (1, 2):
        assert _read(util.open_url(url, cache_dir=str(tmp_path), cache=False)) == PAYLOAD
        assert server.counts['/data.bin'] == expected_count
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match='cache=True'):
        util.open_url(url, cache=False, return_filename=True)


def test_transient_errors_are_retried(server, tmp_path):
    assert _read(util.open_url(server.base + '/flaky.bin', cache_dir=str(tmp_path))) == PAYLOAD
    assert server.counts['/flaky.bin'] == 3
    # A body shorter than its Content-Length is not accepted; the retry gets the full file.
    assert _read(util.open_url(server.base + '/short.bin', cache_dir=str(tmp_path))) == PAYLOAD
    assert server.counts['/short.bin'] == 2


def test_persistent_server_error_fails_after_all_attempts(server, tmp_path):
    url = server.base + '/broken.bin'
    with pytest.raises(OSError, match=r'after 3 attempts.*503') as info:
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=3)
    assert url in str(info.value)
    assert server.counts['/broken.bin'] == 3
    assert list(tmp_path.iterdir()) == []


def test_not_found_fails_with_clear_error(server, tmp_path):
    url = server.base + '/missing.bin'
    with pytest.raises(util.DownloadError, match='404') as info:
        util.open_url(url, cache_dir=str(tmp_path), num_attempts=4)
    assert isinstance(info.value, OSError) and url in str(info.value)
    assert server.counts['/missing.bin'] == 1  # a 404 is a permanent answer: not retried
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_fails(tmp_path):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError, match='after 2 attempts'):
        util.open_url(f'http://127.0.0.1:{port}/x.bin', cache_dir=str(tmp_path), num_attempts=2)


def test_file_urls_and_paths(tmp_path):
    path = tmp_path / 'a b.bin'
    path.write_bytes(PAYLOAD)
    assert _read(util.open_url(path.as_uri())) == PAYLOAD
    assert _read(util.open_url(str(path))) == PAYLOAD
    assert util.open_url(path.as_uri(), return_filename=True) == str(path)
    with pytest.raises(FileNotFoundError):
        util.open_url(str(tmp_path / 'nope.bin'))
    with pytest.raises(FileNotFoundError):
        util.open_url((tmp_path / 'nope.bin').as_uri())
    with pytest.raises(ValueError, match='scheme'):
        util.open_url('ftp://example.com/x.bin')
    with pytest.raises(ValueError, match='num_attempts'):
        util.open_url(str(path), num_attempts=0)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / 'snap.pkl'
    with util.atomic_write(target) as f:
        f.write(b'first')
    assert target.read_bytes() == b'first'

    with pytest.raises(RuntimeError, match='crash'):
        with util.atomic_write(target) as f:
            f.write(b'half-written second version')
            raise RuntimeError('crash')
    assert target.read_bytes() == b'first'
    assert [p.name for p in tmp_path.iterdir()] == ['snap.pkl']  # temp file removed

    with util.atomic_write(str(target)) as f:
        f.write(b'second')
    assert target.read_bytes() == b'second'
    assert [p.name for p in tmp_path.iterdir()] == ['snap.pkl']


def test_easydict_and_objects_by_name():
    d = util.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    del d.a
    assert d == {'b': 2}
    with pytest.raises(AttributeError):
        d.missing  # noqa: B018

    from infonoise import LogUniformSampler
    obj = util.construct_class_by_name(class_name='infonoise.LogUniformSampler', sigma_min=0.5, sigma_max=2.0)
    assert isinstance(obj, LogUniformSampler)
    # construct_class_by_name only reaches this project's fixed table of classes (names come from files).
    with pytest.raises(ValueError, match='Refusing class_name'):
        util.construct_class_by_name(class_name='dnnlib.util.EasyDict', x=3)


def test_format_time():
    assert [util.format_time(s) for s in (5, 125, 3725, 90061)] == ['5s', '2m 05s', '1h 02m 05s', '1d 01h 01m']


def test_write_json_round_trips_and_leaves_an_old_file_on_a_failed_write(tmp_path):
    import json
    from dnnlib.util import write_json
    path = tmp_path / 'r.json'
    write_json(path, {'a': [1, 2.5], 'b': None}, indent=2)
    assert path.read_text() == '{\n  "a": [\n    1,\n    2.5\n  ],\n  "b": null\n}\n'
    with pytest.raises(TypeError):
        write_json(path, {'x': object()})   # not JSON: the body fails, the old file stays
    assert json.loads(path.read_text()) == {'a': [1, 2.5], 'b': None}
    assert [p.name for p in tmp_path.iterdir()] == ['r.json']


def test_jsonable_round_trip_and_strict_mode():
    value = {'t': (1, 2), 'x': 0.5}
    assert util.jsonable(value) == {'t': [1, 2], 'x': 0.5}
    assert util.jsonable({'p': pathlib.PurePosixPath('/a')}, default=str) == {'p': '/a'}
    with pytest.raises(TypeError):
        util.jsonable({'a': np.float32(1.5)})              # plain mode keeps json.dumps' refusal
    # strict: numpy -> Python, NaN/±Inf -> None, so the result passes json.dumps(allow_nan=False).
    out = util.jsonable({'a': np.float32(1.5), 'b': np.arange(3), 'c': [math.nan, math.inf, -math.inf, 2.0]},
                        strict=True)
    assert out == {'a': 1.5, 'b': [0, 1, 2], 'c': [None, None, None, 2.0]}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
