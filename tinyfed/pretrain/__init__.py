"""``tinyfed pretrain``: the keyword-free corpus and the CPU pre-training of the dscnn extractor.

:mod:`~tinyfed.pretrain.corpus` needs no PyTorch; :mod:`~tinyfed.pretrain.train` and
:mod:`~tinyfed.pretrain.release` import it (the ``train`` extra).
"""
