"Readers of the MXNet `.params` and Caffe `.caffemodel` weight files, on files written here from the documented formats."
import argparse, struct, time
import numpy as np
import pytest
import torch
from wsss_nb.core import ConfigError, DataError
from wsss_nb.convert import (CAFFE_NETS, add_convert_parser, caffemodel_to_state_dict, cmd_convert, deeplab_resnet101_shapes,
                             mxnet_resnet38_key, read_caffemodel, read_mxnet_params, resnet38_mxnet_name, save_caffemodel,
                             save_mxnet_params)

# ---------------------------------------------------------------- MXNet, written byte by byte from apache/mxnet ndarray.cc
def _mx_record(a, version):
    "One NDArray record: magic, [storage type], shape, context (cpu 1, id 0), mshadow type flag, data."
    flag = {'float32': 0, 'float64': 1, 'float16': 2, 'uint8': 3, 'int32': 4, 'int8': 5, 'int64': 6}[a.dtype.name]
    if version == 'legacy': head = struct.pack(f'<I{a.ndim}I', a.ndim, *a.shape)                  # ndim in place of a magic
    elif version == 'v1': head = struct.pack(f'<II{a.ndim}q', 0xF993FAC8, a.ndim, *a.shape)
    else: head = struct.pack(f'<Iii{a.ndim}q', 0xF993FAC9, 0, a.ndim, *a.shape)                  # v2: storage type 0 (dense)
    return head + struct.pack('<iii', 1, 0, flag) + a.astype(a.dtype.newbyteorder('<')).tobytes()

def _mx_file(arrays, version='v2', names=True):
    out = struct.pack('<QQQ', 0x112, 0, len(arrays)) + b''.join(_mx_record(a, version) for a in arrays.values())
    keys = list(arrays) if names else []
    return out + struct.pack('<Q', len(keys)) + b''.join(struct.pack('<Q', len(k.encode())) + k.encode() for k in keys)

SMALL = {'arg:conv1a_weight': np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3),
         'aux:bn7_moving_var': np.array([0.5, 2.0], dtype=np.float64),
         'arg:half': np.array([[1.5, -2.0]], dtype=np.float16),
         'arg:ids': np.array([3, -4, 5], dtype=np.int64)}

@pytest.mark.parametrize('version', ['legacy', 'v1', 'v2'])
def test_mxnet_reader_on_handwritten_bytes(tmp_path, version):
    f = tmp_path/'small.params'; f.write_bytes(_mx_file(SMALL, version))
    got = read_mxnet_params(f)
    assert list(got) == list(SMALL)
    for k, a in SMALL.items():
        assert tuple(got[k].shape) == a.shape and str(got[k].dtype) == f'torch.{a.dtype.name}'
        np.testing.assert_array_equal(got[k].numpy(), a)

def test_mxnet_writer_matches_the_format(tmp_path):
    save_mxnet_params(SMALL, tmp_path/'ours.params', version=2)
    assert (tmp_path/'ours.params').read_bytes() == _mx_file(SMALL, 'v2')
    for v in (0, 1, 3):
        save_mxnet_params(SMALL, tmp_path/f'v{v}.params', version=v)
        assert all(np.array_equal(read_mxnet_params(tmp_path/f'v{v}.params')[k].numpy(), a) for k, a in SMALL.items())

def test_mxnet_unnamed_list_gets_index_names(tmp_path):
    f = tmp_path/'list.params'; f.write_bytes(_mx_file(SMALL, names=False))
    assert list(read_mxnet_params(f)) == ['0', '1', '2', '3']

def test_mxnet_bad_files_name_the_file(tmp_path):
    good = _mx_file(SMALL)
    cases = {'torch.params': None, 'cut.params': good[:-30], 'cutdata.params': good[:60], 'empty.params': b'',
             'names.params': struct.pack('<QQQ', 0x112, 0, 1) + _mx_record(SMALL['arg:ids'], 'v2') + struct.pack('<Q', 2),
             'sparse.params': struct.pack('<QQQIi', 0x112, 0, 1, 0xF993FAC9, 1) + b'\0'*64,
             'magic.params': struct.pack('<QQQI', 0x112, 0, 1, 0xDEADBEEF) + b'\0'*64}
    torch.save({'w': torch.zeros(3)}, tmp_path/'torch.params')
    expected = {'torch.params': 'is not an MXNet NDArray file', 'cut.params': 'is truncated', 'cutdata.params': 'is truncated',
                'empty.params': 'is not an MXNet NDArray file', 'names.params': '1 arrays but 2 names',
                'sparse.params': 'is sparse', 'magic.params': 'no NDArray magic'}
    for name, data in cases.items():
        if data is not None: (tmp_path/name).write_bytes(data)
        with pytest.raises(DataError, match=name.replace('.', r'\.')) as e: read_mxnet_params(tmp_path/name)
        assert expected[name] in str(e.value), (name, str(e.value))
    with pytest.raises(DataError, match='not found'): read_mxnet_params(tmp_path/'missing.params')

def test_resnet38_name_rules():
    facts = {'arg:conv1a_weight': 'conv1a.weight', 'arg:res2a_branch1_weight': 'b2.conv_branch1.weight',
             'arg:res2b1_branch2a_weight': 'b2_1.conv_branch2a.weight', 'arg:bn3b2_branch2b1_beta': 'b3_2.bn_branch2b1.bias',
             'aux:bn4b5_branch2a_moving_mean': 'b4_5.bn_branch2a.running_mean', 'arg:res5a_branch2b1_weight': 'b5.conv_branch2b1.weight',
             'aux:bn6a_branch2b2_moving_var': 'b6.bn_branch2b2.running_var',
             'arg:res7a_branch1_weight': 'b7.conv_branch1.weight', 'arg:bn7_gamma': 'bn7.weight', 'bn7_moving_mean': 'bn7.running_mean',
             'arg:linear1000_weight': None, 'arg:linear1000_bias': None}
    for mx, pt in facts.items():
        assert mxnet_resnet38_key(mx) == pt, mx
    assert resnet38_mxnet_name('b4_5.bn_branch2a.running_mean') == 'aux:bn4b5_branch2a_moving_mean'
    for bad in ('arg:fc8_weight', 'arg:res2a_branch2a_gamma', 'arg:bn2a_branch2a_weight', 'arg:res8a_branch1_weight'):
        with pytest.raises(DataError, match='is not a parameter'): mxnet_resnet38_key(bad)

def _parser():
    p = argparse.ArgumentParser(prog='wsss-nb'); add_convert_parser(p.add_subparsers(dest='cmd', required=True))
    return p

def test_resnet38_full_size_file_loads_strictly(tmp_path, capsys):
    "A synthetic ilsvrc-cls_rna-a1_cls1000_ep-0001.params: every name and shape of ResNet-38, random float32 (~420 MB)."
    from wsss_nb.backbones import ResNet38, load_state_dict_file, load_weights
    t0 = time.time()
    with torch.device('meta'): ref = ResNet38().state_dict()
    rng = np.random.default_rng(0)
    arrays = {resnet38_mxnet_name(k): rng.random(tuple(v.shape), dtype=np.float32) for k, v in ref.items() if resnet38_mxnet_name(k)}
    arrays['arg:linear1000_weight'] = rng.random((1000, 4096), dtype=np.float32)
    arrays['arg:linear1000_bias'] = np.zeros(1000, np.float32)
    src = tmp_path/'ilsvrc-cls_rna-a1_cls1000_ep-0001.params'
    save_mxnet_params(arrays, src, version=2)
    samples = {k: arrays[k].copy() for k in ('arg:conv1a_weight', 'aux:bn4b3_branch2b1_moving_var', 'arg:res7a_branch2b2_weight', 'arg:bn7_beta')}
    del arrays
    out = tmp_path/'weights'/'resnet38_ilsvrc.pth'
    a = _parser().parse_args(['convert', 'mxnet-resnet38', str(src), str(out)])
    assert a.func is cmd_convert and a.func(a) == 0
    assert 'dropped 2: arg:linear1000_weight, arg:linear1000_bias' in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ['resnet38_ilsvrc.pth']      # no temporary file left
    sd = load_state_dict_file(out)
    assert list(sd) == list(ref)
    with torch.device('meta'): model = ResNet38()
    model.load_state_dict(sd, strict=True, assign=True)          # strict: every key, every shape
    load_weights(model, sd, str(out))                            # the library's loader agrees
    for mx, a in samples.items(): np.testing.assert_array_equal(sd[mxnet_resnet38_key(mx)].numpy(), a)
    assert int(sd['b3.bn_branch2a.num_batches_tracked']) == 0
    assert time.time() - t0 < 60

def test_resnet38_refuses_incomplete_or_wrong_files(tmp_path):
    save_mxnet_params({'arg:conv1a_weight': np.zeros((64, 3, 3, 3), np.float32), 'arg:fc_weight': np.zeros(2, np.float32)}, tmp_path/'x.params')
    a = _parser().parse_args(['convert', 'mxnet-resnet38', str(tmp_path/'x.params'), str(tmp_path/'x.pth')])
    with pytest.raises(DataError, match=r"x\.params: 'arg:fc_weight' is not a parameter"): a.func(a)
    save_mxnet_params({'arg:conv1a_weight': np.zeros((64, 3, 3, 3), np.float32)}, tmp_path/'y.params')
    with pytest.raises(DataError, match=r'y\.params lacks 190 of the 191 arrays'): cmd_convert(argparse.Namespace(convert_format='mxnet-resnet38', file=tmp_path/'y.params', out=tmp_path/'y.pth'))
    save_mxnet_params({'arg:conv1a_weight': np.zeros((64, 3, 7, 7), np.float32)}, tmp_path/'z.params')
    with pytest.raises(DataError, match=r'needs \(64, 3, 3, 3\)'): cmd_convert(argparse.Namespace(convert_format='mxnet-resnet38', file=tmp_path/'z.params', out=tmp_path/'z.pth'))
    assert not any(p.suffix == '.pth' for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match='is the input file'):
        cmd_convert(argparse.Namespace(convert_format='mxnet-resnet38', file=tmp_path/'z.params', out=tmp_path/'z.params'))

# ---------------------------------------------------------------- Caffe, field numbers of BVLC caffe.proto written by hand
def _varint(n):
    out = b''
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)]); n >>= 7
        if not n: return out

def _fld(num, payload):   # a length-delimited field (wire type 2)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload

def _vint(num, v):        # a varint field (wire type 0)
    return _varint(num << 3) + _varint(v)

def _blob(a, legacy=False):
    a = np.asarray(a, '<f4')
    if legacy: shape = b''.join(_vint(i, d) for i, d in zip((1, 2, 3, 4), (1,)*(4 - a.ndim) + a.shape))   # num channels height width
    else: shape = _fld(7, _fld(1, b''.join(_varint(d) for d in a.shape)))                              # BlobShape.dim, packed
    return shape + _fld(5, a.tobytes())                                                                   # data, packed float

def _layer(name, typ, blobs):        # NetParameter.layer = 100: LayerParameter name 1, type 2, blobs 7
    return _fld(100, _fld(1, name.encode()) + _fld(2, typ.encode()) + b''.join(_fld(7, _blob(b)) for b in blobs))

def _v1_layer(name, code, blobs):    # NetParameter.layers = 2: V1LayerParameter name 4, type 5 (enum), blobs 6
    return _fld(2, _fld(4, name.encode()) + _vint(5, code) + b''.join(_fld(6, _blob(b, legacy=True)) for b in blobs))

def test_caffe_reader_on_handwritten_bytes(tmp_path):
    w = np.arange(4*3*7*7, dtype=np.float32).reshape(4, 3, 7, 7)
    m, v, g, b = np.array([2., 4., 6., 8.]), np.array([4., 8., 12., 16.]), np.array([1., 2., 3., 4.]), np.array([.1, .2, .3, .4])
    data = (_fld(1, b'ResNet-101') + _layer('data', 'Input', []) + _layer('conv1', 'Convolution', [w])
            + _layer('bn_conv1', 'BatchNorm', [m, v, [2.]]) + _layer('scale_conv1', 'Scale', [g, b]))
    (tmp_path/'tiny.caffemodel').write_bytes(data)
    layers = read_caffemodel(tmp_path/'tiny.caffemodel')
    assert [(l.name, l.type, [x.shape for x in l.blobs]) for l in layers] == [
        ('data', 'Input', []), ('conv1', 'Convolution', [(4, 3, 7, 7)]), ('bn_conv1', 'BatchNorm', [(4,), (4,), (1,)]), ('scale_conv1', 'Scale', [(4,), (4,)])]
    np.testing.assert_array_equal(layers[1].blobs[0], w)
    sd = caffemodel_to_state_dict(tmp_path/'tiny.caffemodel', check=False)
    np.testing.assert_allclose(sd['layer1.conv1.bn.running_mean'].numpy(), m/2)
    np.testing.assert_allclose(sd['layer1.conv1.bn.running_var'].numpy(), v/2)
    np.testing.assert_allclose(sd['layer1.conv1.bn.bias'].numpy(), b, rtol=1e-6)
    assert sd['layer1.conv1.bn.num_batches_tracked'].dtype == torch.int64
    save_caffemodel([('data', 'Input', []), ('conv1', 'Convolution', [w]), ('bn_conv1', 'BatchNorm', [m, v, [2.]]), ('scale_conv1', 'Scale', [g, b])],
                    tmp_path/'ours.caffemodel', name='ResNet-101')
    ours = read_caffemodel(tmp_path/'ours.caffemodel')      # same message (protobuf writes fields in number order, so not the same bytes)
    assert [(l.name, l.type) for l in ours] == [(l.name, l.type) for l in layers]
    assert all(np.array_equal(x, y) for l, o in zip(layers, ours) for x, y in zip(l.blobs, o.blobs))

def test_caffe_legacy_v1_layers(tmp_path):
    w, bias, fc = np.ones((8, 3, 3, 3), np.float32), np.arange(8, dtype=np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    data = _v1_layer('conv1_1', 4, [w, bias]) + _v1_layer('relu1_1', 18, []) + _v1_layer('fc8_voc12', 14, [fc, [5., 6.]])
    (tmp_path/'v1.caffemodel').write_bytes(data)
    layers = read_caffemodel(tmp_path/'v1.caffemodel')
    assert [(l.name, l.type) for l in layers] == [('conv1_1', 'Convolution'), ('relu1_1', 'V1 type 18'), ('fc8_voc12', 'InnerProduct')]
    assert [x.shape for x in layers[2].blobs] == [(1, 1, 2, 3), (1, 1, 1, 2)]
    sd = caffemodel_to_state_dict(tmp_path/'v1.caffemodel', 'largefov-vgg16', check=False)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {'conv1_1.weight': (8, 3, 3, 3), 'conv1_1.bias': (8,), 'fc8.weight': (2, 3), 'fc8.bias': (2,)}
    np.testing.assert_array_equal(sd['fc8.weight'].numpy(), fc)
    save_caffemodel([('conv1_1', 'Convolution', [w, bias]), ('fc8_voc12', 'InnerProduct', [fc, [5., 6.]])], tmp_path/'ours.caffemodel', v1=True)
    ours = read_caffemodel(tmp_path/'ours.caffemodel')
    assert [x.shape for x in ours[1].blobs] == [(1, 1, 2, 3), (1, 1, 1, 2)]

def _caffe_resnet101_names():
    "Layer names of DeepLab's Caffe ResNet-101: blocks a,b,c in res2/res5, a,b1..b3 in res3, a,b1..b22 in res4."
    blocks = {2: ['a', 'b', 'c'], 3: ['a', 'b1', 'b2', 'b3'], 4: ['a'] + [f'b{i}' for i in range(1, 23)], 5: ['a', 'b', 'c']}
    out = [('conv1', 'bn_conv1', 'scale_conv1', 3, 64, 7)]
    cin = 64
    for s, cout in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        for j, blk in enumerate(blocks[s]):
            i = cin if j == 0 else cout
            if j == 0: out.append((f'res{s}{blk}_branch1', f'bn{s}{blk}_branch1', f'scale{s}{blk}_branch1', i, cout, 1))
            out += [(f'res{s}{blk}_branch2a', f'bn{s}{blk}_branch2a', f'scale{s}{blk}_branch2a', i, cout//4, 1),
                    (f'res{s}{blk}_branch2b', f'bn{s}{blk}_branch2b', f'scale{s}{blk}_branch2b', cout//4, cout//4, 3),
                    (f'res{s}{blk}_branch2c', f'bn{s}{blk}_branch2c', f'scale{s}{blk}_branch2c', cout//4, cout, 1)]
        cin = cout
    return out

def _full_resnet101_layers(rng, head):
    layers = []
    for conv, bn, scale, cin, cout, k in _caffe_resnet101_names():
        layers += [(conv, 'Convolution', [rng.standard_normal((cout, cin, k, k), dtype=np.float32)*0.01]),
                   (bn, 'BatchNorm', [np.full(cout, 3., np.float32), np.full(cout, 6., np.float32), np.array([3.], np.float32)]),
                   (scale, 'Scale', [np.ones(cout, np.float32), np.zeros(cout, np.float32)])]
    return layers + head

def test_caffe_deeplab_full_size(tmp_path, capsys):
    "The VOC model's layout (ASPP fc1_voc12_c0..c3, MSC copies res075/res05) gives deeplab-pytorch's 632 keys with base."
    rng = np.random.default_rng(0)
    aspp = [(f'fc1_voc12_c{i}', 'Convolution', [np.full((21, 2048, 3, 3), i, np.float32), np.full(21, -i, np.float32)]) for i in range(4)]
    msc = [('conv1_res075', 'Convolution', [np.zeros((64, 3, 7, 7), np.float32)]), ('fc1_voc12_c0_res05', 'Convolution', [np.zeros((21, 2048, 3, 3), np.float32)])]
    layers = _full_resnet101_layers(rng, aspp + msc)
    save_caffemodel(layers, tmp_path/'train2_iter_20000.caffemodel')
    out = tmp_path/'deeplabv2.pth'
    a = _parser().parse_args(['convert', 'caffemodel', str(tmp_path/'train2_iter_20000.caffemodel'), str(out)])
    assert a.net == 'deeplab-resnet101' and a.func(a) == 0
    assert "keys prefixed 'base.'" in capsys.readouterr().out
    sd = torch.load(out, weights_only=True)
    assert len(sd) == 632
    shapes = {'base.layer1.conv1.conv.weight': (64, 3, 7, 7), 'base.layer2.block1.reduce.conv.weight': (64, 64, 1, 1),
              'base.layer2.block1.shortcut.conv.weight': (256, 64, 1, 1), 'base.layer3.block1.reduce.conv.weight': (128, 256, 1, 1),
              'base.layer4.block23.conv3x3.conv.weight': (256, 256, 3, 3), 'base.layer5.block3.increase.bn.running_var': (2048,),
              'base.aspp.c3.weight': (21, 2048, 3, 3), 'base.aspp.c3.bias': (21,), 'base.layer3.block4.increase.bn.num_batches_tracked': ()}
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert [k for k in sd if 'aspp' in k] == [f'base.aspp.c{i}.{p}' for i in range(4) for p in ('weight', 'bias')]
    assert list(sd)[:624] == ['base.' + k for k in deeplab_resnet101_shapes()]
    assert torch.equal(sd['base.layer4.block23.increase.bn.running_mean'], torch.ones(1024))
    assert torch.equal(sd['base.layer4.block23.increase.bn.running_var'], torch.full((1024,), 2.))
    np.testing.assert_array_equal(sd['base.layer4.block7.conv3x3.conv.weight'].numpy(), {n: b for n, _, b in layers}['res4b6_branch2b'][0])
    assert float(sd['base.aspp.c2.bias'][0]) == -2

def test_caffe_init_and_largefov_heads(tmp_path):
    "deeplab-pytorch's init (a fc classifier): no prefix; MCIS LargeFOV: pyram_conv1/2 + score keep their names, fc dropped."
    rng = np.random.default_rng(1)
    backbone = _full_resnet101_layers(rng, [])
    fc = [('fc1_coco', 'Convolution', [np.zeros((91, 2048, 1, 1), np.float32), np.zeros(91, np.float32)])]
    save_caffemodel(backbone + fc, tmp_path/'init.caffemodel')
    sd = caffemodel_to_state_dict(tmp_path/'init.caffemodel')
    assert len(sd) == 626 and list(sd)[-2:] == ['fc.weight', 'fc.bias'] and 'layer1.conv1.conv.weight' in sd
    assert list(caffemodel_to_state_dict(tmp_path/'init.caffemodel', prefix='base.'))[0] == 'base.layer1.conv1.conv.weight'
    fov = [('pyram_conv1', 'Convolution', [np.zeros((1024, 2048, 3, 3), np.float32)]),
           ('pyram_conv2', 'Convolution', [np.zeros((1024, 1024, 1, 1), np.float32)]),
           ('score', 'Convolution', [np.zeros((21, 1024, 1, 1), np.float32), np.zeros(21, np.float32)])]
    save_caffemodel(backbone[:3] + fc + fov, tmp_path/'dpl_init.caffemodel')
    out = tmp_path/'dpl_init.pth'
    a = _parser().parse_args(['convert', 'caffemodel', str(tmp_path/'dpl_init.caffemodel'), str(out), '--net', 'largefov', '--partial'])
    assert a.func(a) == 0
    sd = torch.load(out, weights_only=True)
    assert [k for k in sd if not k.startswith('layer1.')] == ['pyram_conv1.weight', 'pyram_conv2.weight', 'score.weight', 'score.bias']
    with pytest.raises(DataError, match=r"dpl_init\.caffemodel: layer 'pyram_conv1' is not part of DeepLab's ResNet-101"):
        caffemodel_to_state_dict(tmp_path/'dpl_init.caffemodel', check=False)
    with pytest.raises(DataError, match=r'dpl_init\.caffemodel lacks 618 of the 624 backbone tensors of largefov'):
        caffemodel_to_state_dict(tmp_path/'dpl_init.caffemodel', 'largefov')
    assert set(CAFFE_NETS) == {'deeplab-resnet101', 'largefov', 'largefov-vgg16'}

def test_caffe_bad_files_name_the_file(tmp_path):
    (tmp_path/'text.caffemodel').write_text('name: "ResNet-101"\nlayer { name: "conv1" }\n')
    save_mxnet_params(SMALL, tmp_path/'mx.caffemodel')
    good = _layer('conv1', 'Convolution', [np.ones((64, 3, 7, 7), np.float32)])
    (tmp_path/'cut.caffemodel').write_bytes(good[:-100])
    (tmp_path/'short.caffemodel').write_bytes(_fld(100, _fld(1, b'conv1') + _fld(2, b'Convolution')
                                                   + _fld(7, _fld(7, _fld(1, bytes([64, 3, 7, 7]))) + _fld(5, np.ones(10, '<f4').tobytes()))))
    for name, msg in [('text.caffemodel', 'is not a Caffe .caffemodel'), ('mx.caffemodel', 'is not a Caffe .caffemodel'),
                      ('cut.caffemodel', 'is not a Caffe .caffemodel'), ('short.caffemodel', 'the file holds 10')]:
        with pytest.raises(DataError, match=name.replace('.', r'\.')) as e: read_caffemodel(tmp_path/name)
        assert msg in str(e.value), (name, str(e.value))
    save_caffemodel([('conv1', 'Convolution', [np.ones((1, 1, 1, 1))]), ('prelu1', 'PReLU', [np.ones(1)])], tmp_path/'prelu.caffemodel')
    with pytest.raises(DataError, match="prelu.caffemodel: layer 'prelu1' is not part of DeepLab's ResNet-101"):
        caffemodel_to_state_dict(tmp_path/'prelu.caffemodel', check=False)
    save_caffemodel([('res2a_branch2a', 'PReLU', [np.ones(1)])], tmp_path/'type.caffemodel')
    with pytest.raises(DataError, match=r"layer 'res2a_branch2a' \(PReLU\) holds weights, but only"):
        caffemodel_to_state_dict(tmp_path/'type.caffemodel', check=False)
    save_caffemodel([('res2a_branch2a', 'Convolution', [np.ones(1)]), ('res2a_branch2a', 'Convolution', [np.ones(1)])], tmp_path/'dup.caffemodel')
    with pytest.raises(DataError, match='a second layer maps to'): caffemodel_to_state_dict(tmp_path/'dup.caffemodel', check=False)
    with pytest.raises(ConfigError, match='Unknown --net'): caffemodel_to_state_dict(tmp_path/'dup.caffemodel', 'resnet50')
    with pytest.raises(DataError, match='not found'): read_caffemodel(tmp_path/'missing.caffemodel')

def test_largefov_conversion_loads_into_the_mcis_network(tmp_path):
    "A full MCIS-layout dpl_init.caffemodel (ResNet-101 body + pyram_conv1/2 + score) converts into a file that loads into"
    " `wsss_nb.deeplab.DeepLabLargeFOVResNet101` (keys and shapes), body and head values arriving where they belong."
    from wsss_nb.deeplab import DeepLabLargeFOVResNet101, load_largefov
    rng = np.random.default_rng(2)
    fov = [('pyram_conv1', 'Convolution', [rng.standard_normal((1024, 2048, 3, 3)).astype(np.float32)]),
           ('pyram_conv2', 'Convolution', [rng.standard_normal((1024, 1024, 1, 1)).astype(np.float32)]),
           ('score', 'Convolution', [rng.standard_normal((21, 1024, 1, 1)).astype(np.float32), np.arange(21, dtype=np.float32)])]
    save_caffemodel(_full_resnet101_layers(rng, []) + fov, tmp_path/'dpl_init.caffemodel')
    a = _parser().parse_args(['convert', 'caffemodel', str(tmp_path/'dpl_init.caffemodel'), str(tmp_path/'mcis_dpl_init.pth'), '--net', 'largefov'])
    assert a.func(a) == 0
    net = load_largefov(DeepLabLargeFOVResNet101(21), tmp_path/'mcis_dpl_init.pth', verbose=False)
    sd = net.state_dict()
    np.testing.assert_array_equal(sd['pyram_conv1.weight'].numpy(), fov[0][2][0])
    np.testing.assert_array_equal(sd['score.bias'].numpy(), np.arange(21))
    assert torch.equal(sd['layer1.conv1.conv.weight'], torch.load(tmp_path/'mcis_dpl_init.pth', weights_only=True)['layer1.conv1.conv.weight'])
