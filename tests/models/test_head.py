"""The head on its own: training on odd inputs, clear errors, prediction."""
from __future__ import annotations

import pytest
import torch

from m2f_plugin.models.heads import semantic_logits
from tests.helpers import (
    feats,
    make_label_maps,
    mmseg_config_path,
    seg_data_samples,
    tiny_head,
)


def test_forward_shapes_and_ten_sets_with_nine_layers():
    head = tiny_head(transformer_decoder=dict(
        type='M2FMaskedTransformerDecoder', num_layers=9, num_heads=4,
        ffn_dims=64))
    preds = head.prediction_sets(feats())
    assert preds.num_sets == 10
    assert preds.class_logits[0].shape == (2, 8, 6)
    assert preds.mask_logits(0).shape == (2, 8, 16, 16)


def test_loss_backward_reaches_every_parameter():
    head = tiny_head()
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5))
    losses = head.loss(feats(), samples, None)
    assert len(losses) == 3 * 4
    total = sum(losses.values())
    total.backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


def test_all_ignore_label_map_gives_finite_loss():
    head = tiny_head()
    labels = torch.full((2, 64, 64), 255)
    losses = head.loss(feats(), seg_data_samples(labels), None)
    for k, v in losses.items():
        assert torch.isfinite(v), k
    assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0
    sum(losses.values()).backward()


def test_single_class_image():
    head = tiny_head()
    labels = torch.full((2, 64, 64), 3)
    labels[1] = 255
    labels[1, :10, :10] = 0
    losses = head.loss(feats(), seg_data_samples(labels), None)
    assert all(torch.isfinite(v) for v in losses.values())


def test_class_weight_length_checked_at_build():
    with pytest.raises(ValueError, match=r'class_weight has 5 entries but must '
                       r'have num_classes \+ 1 = 6'):
        tiny_head(loss_cls=dict(type='M2FClassLoss', class_weight=[1.0] * 5))


def test_label_beyond_num_classes_is_a_clear_error():
    head = tiny_head(num_classes=5)
    labels = make_label_maps(2, 64, 64, 5)
    labels[0, 30:, 30:] = 7
    with pytest.raises(ValueError, match=r'values \[7\] outside \[0, '
                       r'num_classes=5\).*num_classes'):
        head.loss(feats(), seg_data_samples(labels), None)


def test_predict_matches_direct_formula_and_sizes():
    head = tiny_head().eval()
    x = feats(2, 64, 96)
    with torch.no_grad():
        cls, mask_logits = head.prediction_sets(x).last()
        metas = [dict(img_shape=(60, 90), pad_shape=(64, 96),
                      ori_shape=(60, 90))] * 2
        out = head.predict(x, metas, None)
    assert out.shape == (2, 5, 64, 96)  # pad_shape, cropped later by mmseg
    up = torch.nn.functional.interpolate(mask_logits, (64, 96),
                                         mode='bilinear', align_corners=False)
    ref = torch.einsum('bqk,bqhw->bkhw', cls.softmax(-1)[..., :-1],
                       up.sigmoid())
    assert torch.allclose(out, ref, atol=1e-6)
    # slide inference hands the crop size as a torch.Size
    with torch.no_grad():
        crop = head.predict(x, [dict(img_shape=torch.Size((64, 96)),
                                     pad_shape=(128, 128))] * 2, None)
    assert crop.shape == (2, 5, 64, 96)


def test_predict_a_batch_of_one():
    """Inference of a single image (``MMSegInferencer``'s usual batch):
    the size comes from that image's meta."""
    head = tiny_head().eval()
    x = feats(1, 64, 96)
    with torch.no_grad():
        out = head.predict(x, [dict(img_shape=(60, 90), pad_shape=(64, 96),
                                    ori_shape=(60, 90))], None)
    assert out.shape == (1, 5, 64, 96)


def _straightforward(cls, masks, size, align_corners):
    up = torch.nn.functional.interpolate(masks, size, mode='bilinear',
                                         align_corners=align_corners)
    return torch.einsum('bqk,bqhw->bkhw', cls.softmax(-1)[..., :-1],
                        up.sigmoid())


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('chunk', [1, 500, 4000, 0])
@pytest.mark.parametrize('size', [(37, 51), (8, 8), (5, 3), (64, 96)])
def test_banded_semantic_logits_equal_straightforward(chunk, size,
                                                      align_corners):
    """Row bands (down to one row), up- and down-sampling, both corner modes."""
    torch.manual_seed(0)
    cls = torch.randn(2, 8, 6)
    masks = torch.randn(2, 8, 10, 13) * 4
    ref = _straightforward(cls, masks, size, align_corners)
    out = semantic_logits(cls, masks, size, align_corners, chunk=chunk)
    assert out.shape == ref.shape == (2, 5, *size)
    assert (out - ref).abs().max() < 1e-5


def test_semantic_logits_memory_is_bounded():
    """The largest temporary is a band, not (B, Q, H, W)."""
    cls = torch.randn(1, 100, 151)
    masks = torch.randn(1, 100, 64, 128)
    size = (256, 512)
    allocated = []
    real_grid_sample = torch.nn.functional.grid_sample

    def spy(*args, **kwargs):
        out = real_grid_sample(*args, **kwargs)
        allocated.append(out.numel())
        return out

    torch.nn.functional.grid_sample = spy
    try:
        out = semantic_logits(cls, masks, size, chunk=1 << 20)
    finally:
        torch.nn.functional.grid_sample = real_grid_sample
    assert max(allocated) <= 1 << 20  # vs 100 * 256 * 512 = 13.1M at once
    assert len(allocated) == 256 // ((1 << 20) // (100 * 512)) + 1
    ref = _straightforward(cls, masks, size, False)
    assert (out - ref).abs().max() < 1e-5


def test_training_step_moves_to_host_twice(monkeypatch):
    """One transfer for the target histogram, one for all matching costs:
    no per-image or per-set ``.cpu()`` / ``.item()`` in the loss."""
    head = tiny_head()
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5))
    x = feats()
    calls = {'cpu': 0, 'item': 0}
    real_cpu, real_item = torch.Tensor.cpu, torch.Tensor.item

    def cpu(self, *a, **k):
        calls['cpu'] += 1
        return real_cpu(self, *a, **k)

    def item(self, *a, **k):
        calls['item'] += 1
        return real_item(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, 'cpu', cpu)
    monkeypatch.setattr(torch.Tensor, 'item', item)
    losses = head.loss(x, samples, None)
    sum(losses.values()).backward()
    assert calls == {'cpu': 2, 'item': 0}, calls


def test_predict_names_images_with_non_finite_predictions():
    """A NaN pixel spreads to the image's predictions: a warning names that
    image (and only that one); the maps are still returned."""
    import logging

    from mmengine.logging import MMLogger
    head = tiny_head().eval()
    x = feats(2, 64, 64)
    x[0][1, :, 3, 3] = float('nan')  # image 1 only
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64),
                  img_path=f'/data/img_{i}.png') for i in range(2)]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        with torch.no_grad():
            out = head.predict(x, metas, None)
            clean = head.predict(feats(2, 64, 64), metas, None)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records
                if 'non-finite predictions' in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert '/data/img_1.png' in warnings[0]
    assert '/data/img_0.png' not in warnings[0]
    assert out.shape == clean.shape == (2, 5, 64, 64)
    assert torch.isfinite(out[0]).all() and not torch.isfinite(out[1]).all()


@pytest.mark.parametrize('option, message', [
    (dict(cuda_graph=True), r"cuda_graph moved .*type='M2FGraphedHead'"),
    (dict(cuda_graph_train=True, max_graphs=2),
     r"cuda_graph_train, max_graphs moved .*M2FGraphedHead"),
    (dict(pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2,
                             num_heads=4, ffn_dims=64, num_groups=8,
                             norm_split_stats=False)),
     r'pixel_decoder.norm_split_stats is no longer an option; delete it'),
    (dict(transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                                   num_layers=3, num_heads=4, ffn_dims=64,
                                   cross_attn_split_keys=True)),
     r'transformer_decoder.cross_attn_split_keys is no longer an option'),
])
def test_old_options_fail_naming_what_to_use(option, message):
    with pytest.raises(ValueError, match=message):
        tiny_head(**option)


def _mmseg_builtin_head(feat_channels: int, out_channels: int):
    """mmseg's own ``Mask2FormerHead`` with ``tiny_head``'s sizes (classes,
    queries, layers, heads, FFN widths, groups) and the given channels."""
    import mmdet.models  # noqa: F401  (the built-in head wraps mmdet's)
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(mmseg_config_path(
        'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py')
    ).model.decode_head
    cfg.update(in_channels=[8, 16, 24, 32], feat_channels=feat_channels,
               out_channels=out_channels, num_classes=5, num_queries=8)
    cfg.loss_cls.class_weight = [1.0] * 5 + [0.1]
    encoder = cfg.pixel_decoder.encoder
    encoder.num_layers = 2
    encoder.layer_cfg.self_attn_cfg.update(embed_dims=feat_channels,
                                           num_heads=4)
    encoder.layer_cfg.ffn_cfg.update(embed_dims=feat_channels,
                                     feedforward_channels=64)
    cfg.pixel_decoder.norm_cfg.num_groups = 8
    cfg.pixel_decoder.positional_encoding.num_feats = feat_channels // 2
    cfg.positional_encoding.num_feats = feat_channels // 2
    decoder = cfg.transformer_decoder
    decoder.num_layers = 3
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        decoder.layer_cfg[attn].update(embed_dims=feat_channels, num_heads=4)
    decoder.layer_cfg.ffn_cfg.update(embed_dims=feat_channels,
                                     feedforward_channels=64)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        head = MODELS.build(cfg)
    head.init_weights()
    return head.eval()


def test_feat_and_out_channels_mean_what_they_mean_in_mmseg():
    """``feat_channels`` (pixel decoder and queries) and ``out_channels``
    (mask features) set apart, 32 and 16: mmseg's built-in head with the
    same settings converts into ours with every tensor's shape matching,
    and both give the same predictions; the mask features have
    ``out_channels`` channels, the multi-scale memories ``feat_channels``."""
    from m2f_plugin.converters import convert_mmseg_state_dict

    builtin = _mmseg_builtin_head(feat_channels=32, out_channels=16)
    ours = tiny_head(feat_channels=32, out_channels=16).eval()
    state = {f'decode_head.{k}': v for k, v in builtin.state_dict().items()}
    converted, report = convert_mmseg_state_dict(state)
    assert not report.unmapped
    converted = {k[len('decode_head.'):]: v for k, v in converted.items()}
    ours.load_state_dict(converted, strict=True)
    x = feats()
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5))
    with torch.no_grad():
        mask_features, memories = ours.pixel_decoder(list(x))
        cls_ref, mask_ref = builtin(x, samples)
        cls_out, mask_out = ours(x)
    assert mask_features.shape == (2, 16, 16, 16)
    assert [tuple(m.shape) for m in memories] == [
        (2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]
    assert len(cls_out) == len(cls_ref) == 4
    for s in range(4):
        torch.testing.assert_close(cls_out[s], cls_ref[s], rtol=1e-4,
                                   atol=1e-5)
        torch.testing.assert_close(mask_out[s], mask_ref[s], rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('chunk', [1, 300, 0])
def test_banded_semantic_logits_with_gradients_equal_straightforward(
        chunk, align_corners):
    """With autograd on (the training-time path, where bands are assigned
    instead of written in place), the banded result and the gradients of
    both inputs equal the upsample-all formula's."""
    g = torch.Generator().manual_seed(0)
    cls0 = torch.randn(2, 6, 5, generator=g)
    masks0 = torch.randn(2, 6, 7, 9, generator=g) * 3
    size = (19, 23)
    weights = torch.randn(2, 4, *size, generator=g)
    results = []
    for banded in (True, False):
        cls = cls0.clone().requires_grad_()
        masks = masks0.clone().requires_grad_()
        if banded:
            out = semantic_logits(cls, masks, size, align_corners,
                                  chunk=chunk)
        else:
            out = _straightforward(cls, masks, size, align_corners)
        assert out.shape == (2, 4, *size) and out.requires_grad
        (out * weights).sum().backward()
        results.append((out.detach(), cls.grad, masks.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
