"""torch_utils.persistence: EDM record format, safe loading (no code from the file runs), trusted loading."""
import collections
import copy
import io
import os
import pickle
import pickletools

import pytest
import torch

from dnnlib.util import EasyDict
from torch_utils import persistence

# ---------------------------------------------------------------------------------------------------
# Small persistent classes (registered with the safe loader by name).


@persistence.persistent_class
class TinyBlock(torch.nn.Module):
    def __init__(self, width, bias=True):
        super().__init__()
        self.width = width
        self.weight = torch.nn.Parameter(torch.randn(width, width) / width)
        self.bias = torch.nn.Parameter(torch.randn(width)) if bias else None

    def forward(self, x):
        x = x @ self.weight.t()
        return x + self.bias if self.bias is not None else x


@persistence.persistent_class
class TinyNet(torch.nn.Module):
    def __init__(self, width=4, depth=2, bias=True):
        super().__init__()
        self.blocks = torch.nn.ModuleList([TinyBlock(width, bias=bias) for _ in range(depth)])
        self.head = TinyBlock(width, bias=False)
        self.register_buffer('scale', torch.linspace(1, 2, width))
        self.register_buffer('scratch', torch.full([width], float('nan')), persistent=False)

    def forward(self, x):
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x) * self.scale


class _ExcludedSampler:
    def __init__(self, tag):
        self.tag = tag


@persistence.persistent_class
class TinyLoss:
    _persistence_exclude = ('sigma_sampler',)

    def __init__(self, P_mean=-1.2, P_std=1.2):
        self.P_mean = P_mean
        self.P_std = P_std
        self.sigma_sampler = _ExcludedSampler('default')


def _tiny_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def _assert_same_module(a, b):
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _capture_records(data):
    """Unpickle `data`, returning the metas handed to the persistent-record hook (never rebuilding)."""
    metas = []

    class Capture(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
                return lambda meta: metas.append(meta) or ('record', meta['class_name'])
            return super().find_class(module, name)

    Capture(io.BytesIO(data)).load()
    return metas


# ---------------------------------------------------------------------------------------------------
# Hand-written records, the way EDM's pickler lays them out.

class _Record:
    """Pickles exactly as EDM's persistent objects do: REDUCE of the record hook with one meta dict."""

    def __init__(self, class_name, state, module_src='', version=6):
        self.meta = dict(type='class', version=version, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


def _plain_torch_module(cls, state):
    """A non-persistent torch.nn module (e.g. ModuleList) holding `state` as its __dict__: it pickles
    natively (NEWOBJ of the real class + BUILD with the state), as in EDM's files."""
    module = cls.__new__(cls)
    module.__dict__.update(state)
    return module


class _CallsFunction:
    """Pickles as `func(*args)`: what a malicious file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _module_state(params=(), buffers=(), modules=(), **attrs):
    state = dict(training=False, _parameters=collections.OrderedDict(params),
                 _buffers=collections.OrderedDict(buffers), _non_persistent_buffers_set=set(),
                 _forward_hooks=collections.OrderedDict(), _backward_hooks=collections.OrderedDict(),
                 _modules=collections.OrderedDict(modules))
    state.update(attrs)
    return state


def _records_from_live(module, module_src):
    """EDM-style record tree of a live module: same __dict__ state, every persistent class as a record."""
    state = dict(module.__getstate__())
    state['_modules'] = collections.OrderedDict(
        (name, None if child is None else _records_from_live(child, module_src))
        for name, child in module._modules.items())
    if persistence.is_persistent(module):
        return _Record(type(module).__name__, state, module_src)
    return _plain_torch_module(type(module), state)


def _sentinel_src(path):
    return f'open({str(path)!r}, "w").write("executed")\n'


# ---------------------------------------------------------------------------------------------------
# Writing.

def test_decorator_records_constructor_arguments():
    net = _tiny_net(width=3, depth=1)
    assert net._init_args == () and net._init_kwargs == dict(width=3, depth=1)
    block = TinyBlock(5, bias=False)
    assert block._init_args == (5,) and block._init_kwargs == dict(bias=False)
    assert persistence.is_persistent(net) and persistence.is_persistent(TinyNet)
    assert not persistence.is_persistent(torch.nn.Linear(2, 2))
    assert persistence.persistent_class(TinyNet) is TinyNet  # idempotent


def test_pickle_uses_edm_record_format():
    net = _tiny_net()
    loss = TinyLoss(P_mean=-1.0)
    data = pickle.dumps(dict(ema=net, loss_fn=loss))
    globals_used = {arg for op, arg, _ in pickletools.genops(data) if op.name in ('SHORT_BINUNICODE', 'BINUNICODE')}
    assert {'torch_utils.persistence', '_reconstruct_persistent_obj'} <= globals_used

    metas = _capture_records(data)
    by_name = collections.defaultdict(list)
    for meta in metas:
        by_name[meta['class_name']].append(meta)
    assert sorted(by_name) == ['TinyBlock', 'TinyLoss', 'TinyNet'] and len(by_name['TinyBlock']) == 3
    with open(__file__, encoding='utf-8') as f:
        own_source = f.read()
    for meta in metas:
        assert meta['type'] == 'class' and meta['version'] == 6
        assert meta['module_src'] == own_source  # the whole module's source, as EDM stores it
    top = by_name['TinyNet'][-1]['state']  # children are pickled (and rebuilt) before their parent
    assert metas[-2]['class_name'] == 'TinyNet' and metas[-1]['class_name'] == 'TinyLoss'
    assert {'_parameters', '_buffers', '_modules', '_init_args', '_init_kwargs', 'training'} <= set(top)
    assert top['_init_kwargs'] == {} and set(top['_buffers']) == {'scale', 'scratch'}
    assert top['_modules']['head'] == ('record', 'TinyBlock')
    loss_state = by_name['TinyLoss'][0]['state']
    assert loss_state == dict(P_mean=-1.0, P_std=1.2, _init_args=(), _init_kwargs=dict(P_mean=-1.0))
    assert loss.sigma_sampler.tag == 'default'  # excluding it from the pickle does not touch the object


def test_deepcopy_and_plain_pickle_in_process():
    net = _tiny_net()
    x = torch.randn(3, 4)
    twin = copy.deepcopy(net)
    _assert_same_module(net, twin)
    assert torch.equal(twin(x), net(x)) and twin.head.weight is not net.head.weight
    assert twin._init_kwargs == net._init_kwargs

    loss = TinyLoss(P_std=2.0)
    loss.sigma_sampler = _ExcludedSampler('adaptive')
    loss_copy = copy.deepcopy(loss)
    assert (loss_copy.P_mean, loss_copy.P_std, loss_copy.sigma_sampler.tag) == (-1.2, 2.0, 'default')

    again = pickle.loads(pickle.dumps(net))  # same code loaded: the live class is reused
    _assert_same_module(net, again)


def test_plain_pickle_refuses_foreign_source(tmp_path):
    sentinel = tmp_path / 'ran'
    data = pickle.dumps(_Record('TinyNet', _module_state(), module_src=_sentinel_src(sentinel)))
    with pytest.raises(pickle.UnpicklingError, match='load_network_pickle'):
        pickle.loads(data)
    assert not sentinel.exists()


# ---------------------------------------------------------------------------------------------------
# Safe loading.

def test_snapshot_round_trip(tmp_path):
    net = _tiny_net(seed=1, width=5, depth=3).eval().requires_grad_(False)
    loss = TinyLoss(P_mean=-0.4, P_std=1.4)
    loss.sigma_sampler = _ExcludedSampler('adaptive')
    profile = dict(sigma=[0.1, 1.0, 10.0], rate=[3.0, 2.0, 0.5], pivot=0.7, step=1200)
    snapshot = dict(ema=net, loss_fn=loss, augment_pipe=None,
                    dataset_kwargs=EasyDict(class_name='training.dataset.ImageFolderDataset', path='/data/x.zip',
                                            xflip=False, max_size=None),
                    infonoise=profile)
    path = tmp_path / 'network-snapshot-000000.pkl'
    persistence.dump_network_pickle(snapshot, str(path))

    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    loaded = persistence.load_network_pickle(str(path))
    assert torch.equal(torch.get_rng_state(), rng_before)  # rebuilding does not consume the caller's RNG

    assert set(loaded) == set(snapshot)
    _assert_same_module(net, loaded['ema'])
    x = torch.randn(2, 5)
    assert torch.equal(loaded['ema'](x), net(x))
    assert not loaded['ema'].training and not any(p.requires_grad for p in loaded['ema'].parameters())
    assert torch.isnan(loaded['ema'].scratch).all()  # non-persistent buffer: from the constructor
    assert type(loaded['loss_fn']) is TinyLoss
    assert (loaded['loss_fn'].P_mean, loaded['loss_fn'].P_std) == (-0.4, 1.4)
    assert loaded['loss_fn'].sigma_sampler.tag == 'default'  # excluded from the file
    assert loaded['augment_pipe'] is None
    assert type(loaded['dataset_kwargs']) is EasyDict and loaded['dataset_kwargs'] == snapshot['dataset_kwargs']
    assert loaded['infonoise'] == profile

    with open(path, 'rb') as f:  # file objects work too; training-mode networks keep their mode
        net.train()
        buf = io.BytesIO()
        persistence.dump_network_pickle(net, buf)
        buf.seek(0)
        assert persistence.load_network_pickle(buf).training
        assert persistence.load_network_pickle(f)['infonoise'] == profile


def test_refuses_code_execution_globals(tmp_path):
    sentinel = tmp_path / 'pwned'
    for payload, name in [
        (_CallsFunction(os.system, f'touch {sentinel}'), f'{os.system.__module__}.system'),
        (_CallsFunction(eval, f'open({str(sentinel)!r}, "w")'), 'builtins.eval'),
        (_CallsFunction(getattr, collections.OrderedDict, 'fromkeys'), 'builtins.getattr'),
        (_CallsFunction(pickle.loads, b''), '_pickle.loads'),
    ]:
        data = pickle.dumps(dict(ema=None, dataset_kwargs=dict(x=payload)))
        with pytest.raises(pickle.UnpicklingError, match=f'refusing to load global {name}'):
            persistence.load_network_pickle(io.BytesIO(data))
        assert not sentinel.exists()
    import datetime
    with pytest.raises(pickle.UnpicklingError, match='datetime.datetime'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps({'when': datetime.datetime(2024, 1, 1)})))


def test_embedded_source_never_runs(tmp_path):
    sentinel = tmp_path / 'ran'
    # Unknown class: refused by name.
    data = pickle.dumps(dict(ema=_Record('Evil', _module_state(), module_src=_sentinel_src(sentinel))))
    with pytest.raises(pickle.UnpicklingError, match='unknown persistent class Evil .refusing to execute code'):
        persistence.load_network_pickle(io.BytesIO(data))
    # Known class name with hostile source: rebuilt from our class; the source is ignored.
    net = _tiny_net()
    data = pickle.dumps(dict(ema=_records_from_live(net, _sentinel_src(sentinel))))
    loaded = persistence.load_network_pickle(io.BytesIO(data))['ema']
    _assert_same_module(net, loaded)
    assert not sentinel.exists()


def test_tensor_hooks_are_refused():
    t = torch.zeros(2)
    evil = _CallsFunction(torch._utils._rebuild_parameter, t, True, collections.OrderedDict(h=print))
    with pytest.raises(pickle.UnpicklingError, match='builtins.print'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(evil)))
    hooked = _CallsFunction(torch._utils._rebuild_parameter, t, True, collections.OrderedDict(h=EasyDict))
    with pytest.raises(pickle.UnpicklingError, match='backward hooks'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(hooked)))


def test_mismatched_records_fail_clearly():
    net = _tiny_net(width=4)
    record = _records_from_live(net, '')
    record.meta['state']['_init_kwargs'] = dict(width=3)  # recorded arguments disagree with the tensors
    with pytest.raises(pickle.UnpicklingError, match=r'TinyNet: tensor shapes .* scale \[4\] vs \[3\]'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(record)))

    record = _records_from_live(net, '')
    del record.meta['state']['_modules']['head'].meta['state']['_parameters']['weight']
    record.meta['state']['_buffers']['extra'] = torch.zeros(1)
    with pytest.raises(pickle.UnpicklingError, match=r'missing from the file: head\.weight; not in TinyNet: extra'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(record)))

    record = _records_from_live(net, '')
    del record.meta['state']['_init_kwargs']
    with pytest.raises(pickle.UnpicklingError, match='lacks its recorded constructor arguments'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(record)))

    record = _Record('TinyNet', _module_state(_init_args=(), _init_kwargs=dict(width='wide')))
    with pytest.raises(pickle.UnpicklingError, match='cannot rebuild TinyNet from its recorded arguments'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(record)))

    record = _Record('TinyNet', _module_state(), version=7)
    with pytest.raises(pickle.UnpicklingError, match='format version 7'):
        persistence.load_network_pickle(io.BytesIO(pickle.dumps(record)))


# ---------------------------------------------------------------------------------------------------
# Official-format pickles of this project's networks (golden outputs of the EDM reference).

def _edm_pickle_from_golden(rec, networks, module_src):
    """Write an EDM-format network pickle holding the reference's weights (tests/data/edm_parity.pt).

    The record tree follows the reference's module hierarchy; node class names come from the same
    hierarchy of our network (they are the reference's names by contract)."""
    kwargs = dict(rec['precond_kwargs'], **rec['model_kwargs'])
    torch.manual_seed(0)
    ours = getattr(networks, rec['precond'])(**kwargs)
    golden = rec['state_dict']

    def node(module, prefix, init_kwargs):
        params = [(k, torch.nn.Parameter(golden[prefix + k].clone(), requires_grad=False))
                  for k, v in module._parameters.items() if v is not None]
        buffers = [(k, golden[prefix + k].clone()) for k, v in module._buffers.items()
                   if v is not None and k not in module._non_persistent_buffers_set]
        children = [(k, node(c, f'{prefix}{k}.', dict(getattr(c, '_init_kwargs', {}))))
                    for k, c in module._modules.items() if c is not None]
        state = _module_state(params, buffers, children, _init_args=(), _init_kwargs=init_kwargs)
        if persistence.is_persistent(module):
            return _Record(type(module).__name__, state, module_src)
        return _plain_torch_module(type(module), state)

    return pickle.dumps(dict(ema=node(ours, '', kwargs), loss_fn=None, augment_pipe=None,
                             dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='x.zip')))


def test_official_format_pickles_load_with_reference_outputs(parity_records, tmp_path):
    from training import networks
    sentinel = tmp_path / 'ran'
    for name, rec in parity_records.items():
        data = _edm_pickle_from_golden(rec, networks, _sentinel_src(sentinel))
        loaded = persistence.load_network_pickle(io.BytesIO(data))
        net = loaded['ema']
        assert type(net).__name__ == rec['precond'] and not net.training
        assert sum(p.numel() for p in net.parameters()) == rec['num_params']
        for key, tensor in net.state_dict().items():
            assert torch.equal(tensor, rec['state_dict'][key]), (name, key)
        first2 = {k: None if rec[k] is None else rec[k][:2]
                  for k in ('x', 'sigma', 'class_labels', 'augment_labels', 'output')}
        with torch.no_grad():  # two images suffice: the networks are per-sample
            out = net(first2['x'], first2['sigma'], first2['class_labels'], augment_labels=first2['augment_labels'])
        err = float((out.double() - first2['output'].double()).norm() / first2['output'].double().norm())
        assert err <= 1e-5, (name, err)
        assert loaded['dataset_kwargs']['path'] == 'x.zip'
    assert not sentinel.exists()


def test_our_networks_round_trip(tmp_path):
    from training import networks
    torch.manual_seed(0)
    net = networks.EDMPrecond(img_resolution=8, img_channels=2, label_dim=3, model_type='DhariwalUNet',
                              model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4])
    net.eval()
    loaded = persistence.load_network_pickle(io.BytesIO(pickle.dumps(dict(ema=net))))['ema']
    _assert_same_module(net, loaded)
    x, sigma, labels = torch.randn(2, 2, 8, 8), torch.tensor([0.3, 4.0]), torch.eye(3)[:2]
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, labels), net(x, sigma, labels))


# ---------------------------------------------------------------------------------------------------
# Trusted loading (runs the embedded source: pinned files only).

_TRUSTED_SRC = '''
import pathlib
pathlib.Path({sentinel!r}).write_text('executed')
from torch_utils import persistence

@persistence.persistent_class
class Greeter:
    def __init__(self, name='world'):
        self.name = name

    def greet(self):
        return 'hello ' + self.name
'''


def test_trusted_path_executes_embedded_source(tmp_path):
    first, second = tmp_path / 'first', tmp_path / 'second'
    state = dict(name='edm', _init_args=(), _init_kwargs=dict(name='edm'))
    data = pickle.dumps(dict(detector=_Record('Greeter', state, _TRUSTED_SRC.format(sentinel=str(first)))))
    obj = persistence.load_trusted_pickle(io.BytesIO(data))['detector']
    assert first.read_text() == 'executed'
    assert obj.greet() == 'hello edm' and type(obj).__module__.startswith('_imported_module_')
    assert copy.deepcopy(obj).greet() == 'hello edm'  # the exec'd class stays usable

    # The same kind of file is refused by the safe loader without running anything...
    data = pickle.dumps(dict(detector=_Record('Greeter', state, _TRUSTED_SRC.format(sentinel=str(second)))))
    with pytest.raises(pickle.UnpicklingError, match='unknown persistent class Greeter'):
        persistence.load_network_pickle(io.BytesIO(data))
    assert not second.exists()
    # ...unless the caller explicitly allows the trusted path.
    obj = persistence.load_network_pickle(io.BytesIO(data), allow_trusted=True)['detector']
    assert obj.greet() == 'hello edm' and second.exists()
    assert any('inception-2015-12-05.pkl' in url for url in persistence.pinned_urls)


def test_official_format_loss_and_augment_records():
    from training import loss as loss_module
    from training import augment as augment_module
    sentinel_src = 'raise SystemExit("embedded source must not run")\n'
    # EDM's train.py builds the loss from defaults and the augment pipe from these kwargs (CIFAR-10 recipe).
    aug_kwargs = dict(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
    data = pickle.dumps(dict(
        loss_fn=_Record('EDMLoss', dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5, _init_args=(), _init_kwargs={}),
                        sentinel_src),
        vp_loss=_Record('VPLoss', dict(beta_d=19.9, beta_min=0.1, epsilon_t=1e-5, _init_args=(),
                                       _init_kwargs=dict(beta_d=10.0)), sentinel_src),
        augment_pipe=_Record('AugmentPipe', dict(aug_kwargs, _init_args=(), _init_kwargs=aug_kwargs), sentinel_src),
    ))
    loaded = persistence.load_network_pickle(io.BytesIO(data))
    assert type(loaded['loss_fn']) is loss_module.EDMLoss
    assert (loaded['loss_fn'].P_mean, loaded['loss_fn'].P_std, loaded['loss_fn'].sigma_data) == (-1.2, 1.2, 0.5)
    assert type(loaded['vp_loss']) is loss_module.VPLoss and loaded['vp_loss'].beta_d == 10.0
    pipe = loaded['augment_pipe']
    assert type(pipe) is augment_module.AugmentPipe
    assert (pipe.p, pipe.xflip, pipe.yflip, pipe.scale, pipe.rotate_int) == (0.12, 1e8, 1.0, 1.0, 0.0)

    # Our own snapshot of a loss whose sigma_sampler was replaced: the sampler stays out of the file.
    loss = loss_module.EDMLoss(P_mean=-1.0)
    loss.sigma_sampler = 'replaced'
    back = persistence.load_network_pickle(io.BytesIO(pickle.dumps(dict(loss_fn=loss))))['loss_fn']
    assert back.P_mean == -1.0 and back.sigma_sampler != 'replaced'
    assert type(back.sigma_sampler) is type(loss_module.EDMLoss().sigma_sampler)


@pytest.mark.gpu
def test_load_to_cuda():
    net = _tiny_net().eval()
    data = pickle.dumps(dict(ema=net, extra=torch.ones(2)))
    loaded = persistence.load_network_pickle(io.BytesIO(data), map_location='cuda')
    assert all(t.is_cuda for t in loaded['ema'].state_dict().values()) and loaded['extra'].is_cuda
    _assert_same_module(net, loaded['ema'].cpu())
