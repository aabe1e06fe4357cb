"""The pinned detector's trust on first download, pinned privately, with a real loopback HTTP server.

The pinned file's stand-in is a pickle in the Inception detector's format (a persistent record whose embedded
source the trusted path runs). The "attacker's" version also creates a marker file when its source runs, so a
test that reaches the trusted loader with it would leave the marker behind.
"""
import hashlib
import http.server
import json
import os
import pickle
import stat
import threading

import pytest

from dnnlib import util
from torch_utils import persistence
from training.metrics.detector import INCEPTION_URL, DetectorError, load_detector

pytestmark = pytest.mark.usefixtures('one_torch_thread')
SHAPE = (3, 8, 8)

DETECTOR_SRC = '''
import torch
class TinyDetector(torch.nn.Module):
    def forward(self, x, return_features=False):
        return x.float().mean(dim=(2, 3))
'''


class _Record:
    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


def detector_pickle(prefix: str = '') -> bytes:
    """A detector pickle whose embedded source is `prefix` + the tiny detector (3 features: channel means)."""
    namespace = {}
    exec(compile(DETECTOR_SRC, '<detector>', 'exec'), namespace)
    meta = dict(type='class', version=6, module_src=prefix + DETECTOR_SRC, class_name='TinyDetector',
                state=dict(namespace['TinyDetector']().__dict__))
    return pickle.dumps(_Record(meta), protocol=4)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A loopback server whose URL is pinned (no digest recorded), a private pin store and an empty cache."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    server.files, server.hits = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{server.server_address[1]}/metrics/inception-2015-12-05.pkl'
    monkeypatch.setitem(persistence.pinned_sha256, url, None)
    monkeypatch.setenv(persistence.PIN_STORE_ENV, str(tmp_path / 'config' / 'pins.json'))
    monkeypatch.delenv(persistence.TRUSTED_SHA256_ENV, raising=False)
    marker = tmp_path / 'marker'
    genuine = detector_pickle()
    evil = detector_pickle(f"__import__('pathlib').Path({str(marker)!r}).touch()\n")
    server.files['/metrics/inception-2015-12-05.pkl'] = genuine
    cache = tmp_path / 'cache'
    yield dict(url=url, server=server, cache=str(cache), cached=util.cache_file_path(url, str(cache)),
               store=tmp_path / 'config' / 'pins.json', marker=marker, genuine=genuine, evil=evil)
    server.shutdown()
    server.server_close()


def load(site):
    return load_detector(site['url'], 'cpu', SHAPE, cache_dir=site['cache'])


def refused(site, *phrases):
    with pytest.raises(DetectorError) as info:
        load(site)
    message = str(info.value)
    assert '\n' not in message and message.count('. ') == 0, message      # one sentence
    for phrase in phrases:
        assert phrase in message, message
    assert not site['marker'].exists()
    return message


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_built_in_pins_are_https_and_cover_the_inception_detector():
    assert INCEPTION_URL in persistence.pinned_sha256 and persistence.is_pinned(INCEPTION_URL)
    assert all(url.startswith('https://') for url in persistence.pinned_urls)
    assert not persistence.is_pinned(INCEPTION_URL + '?x=1')


def test_first_download_is_accepted_and_pinned_privately(site):
    det = load(site)
    assert det.feature_dim == 3 and len(site['server'].hits) == 1
    with open(site['cached'], 'rb') as f:
        assert f.read() == site['genuine']
    assert json.loads(site['store'].read_text()) == {site['url']: sha(site['genuine'])}
    assert stat.S_IMODE(os.stat(site['store']).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(site['store'].parent).st_mode) & 0o077 == 0
    # Next time the cached copy is used (no download), because its digest is the private pin.
    assert load(site).feature_dim == 3 and len(site['server'].hits) == 1
    assert persistence.private_pin(site['url']) == sha(site['genuine'])


def test_a_planted_cache_file_without_a_pin_is_refused(site):
    os.makedirs(site['cache'])
    with open(site['cached'], 'wb') as f:
        f.write(site['evil'])
    message = refused(site, site['cached'], 'never downloaded', 'delete it', persistence.TRUSTED_SHA256_ENV)
    assert sha(site['evil']) in message
    assert site['server'].hits == [] and not site['store'].exists()


def test_a_file_altered_after_pinning_is_refused_and_deleting_it_downloads_it_again(site):
    load(site)
    with open(site['cached'], 'wb') as f:
        f.write(site['evil'])
    refused(site, site['cached'], 'is not the pinned digest', 'delete it')
    os.remove(site['cached'])
    assert load(site).feature_dim == 3 and len(site['server'].hits) == 2
    assert not site['marker'].exists()


def test_a_pin_store_others_can_write_is_not_trusted(site):
    load(site)
    os.chmod(site['store'], 0o666)
    refused(site, site['cached'], 'never downloaded')


def test_the_environment_variable_pins_a_digest(site, monkeypatch):
    os.makedirs(site['cache'])
    with open(site['cached'], 'wb') as f:
        f.write(site['genuine'])
    monkeypatch.setenv(persistence.TRUSTED_SHA256_ENV, f"{'0' * 64}, {sha(site['genuine']).upper()}")
    assert load(site).feature_dim == 3 and site['server'].hits == []
    monkeypatch.setenv(persistence.TRUSTED_SHA256_ENV, sha(site['genuine']))
    with open(site['cached'], 'wb') as f:
        f.write(site['evil'])
    refused(site, site['cached'], 'is not the pinned digest')


def test_a_built_in_digest_wins_over_the_private_pin(site, monkeypatch):
    # The private pin vouches for the attacker's file, but the project's own digest is the genuine one.
    persistence.record_private_pin(site['url'], sha(site['evil']))
    monkeypatch.setitem(persistence.pinned_sha256, site['url'], sha(site['genuine']))
    os.makedirs(site['cache'])
    with open(site['cached'], 'wb') as f:
        f.write(site['evil'])
    refused(site, site['cached'], 'not the digest recorded')
    # A download that does not match the built-in digest is refused too.
    os.remove(site['cached'])
    site['server'].files['/metrics/inception-2015-12-05.pkl'] = site['evil']
    refused(site, 'just downloaded', 'not the digest recorded')
    assert len(site['server'].hits) == 1


def test_the_pin_store_is_not_in_the_download_cache(tmp_path, monkeypatch, site):
    monkeypatch.delenv(persistence.PIN_STORE_ENV)
    monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / 'xdg'))
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'shared-cache'))
    assert persistence.pin_store_path() == str(tmp_path / 'xdg' / 'infonoise' / 'pins.json')
    monkeypatch.delenv('XDG_CONFIG_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    store = persistence.pin_store_path()
    assert store == str(tmp_path / 'home' / '.config' / 'infonoise' / 'pins.json')
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    assert not store.startswith(util.make_cache_dir_path() + os.sep)
    # Pointed into the (possibly shared) cache folder, the store is refused before anything is read or run.
    monkeypatch.setenv(persistence.PIN_STORE_ENV, os.path.join(site['cache'], 'pins.json'))
    refused(site, 'lies inside the download cache', persistence.PIN_STORE_ENV)
    assert site['server'].hits == []



def test_an_unwritable_cache_only_costs_a_download_next_time(site, tmp_path, caplog):
    blocker = tmp_path / 'not-a-folder'
    blocker.write_bytes(b'')
    site['cache'] = str(blocker / 'cache')          # the cache folder cannot be created under a plain file
    with caplog.at_level('WARNING', logger='training'):
        assert load(site).feature_dim == 3
    assert any('Could not cache' in r.getMessage() for r in caplog.records)
    assert persistence.private_pin(site['url']) == sha(site['genuine'])
    assert load(site).feature_dim == 3 and len(site['server'].hits) == 2
