"""The committed latency models, one per chip: written by ``python -m ane_vit.latency fit``.

Do not edit by hand: refit from ``results/latency_estimate/calibration.json`` (the validation is in
``results/latency_estimate/model.json``). Coefficients are ms per unit of each regressor."""

MODELS = {'A14': {'balance': 25.39841683149119,
         'chip': 'A14',
         'coefficients': {'layout_bytes': 6.298801550053025e-08,
                          'ops': 0.0,
                          'other_bytes': 0.0,
                          'roofline': 2.0754373756672317e-10},
         'columns': ['roofline', 'other_bytes', 'layout_bytes', 'ops'],
         'families': ['EfficientFormer',
                      'EfficientFormerV2',
                      'FastViT',
                      'MobileNetV2',
                      'MobileOne',
                      'RepViT'],
         'form': 'roofline+source',
         'halfwidth': 0.17244626593813236,
         'level': 0.8,
         'n_points': 26,
         'notes': {'lofo_in_interval': 0.8461538461538461,
                   'lofo_max_abs_rel_error': 0.31041411664596874,
                   'lofo_mean_abs_rel_error': 0.08977440241103783},
         'overheads_ms': {'coreml_performance': 1.2209828977894408,
                          'modelbench': 0.5199911394100547,
                          'xcode14_ios16': 0.44250163217498906},
         'reference_source': 'xcode14_ios16',
         'source_scales': {}}}
