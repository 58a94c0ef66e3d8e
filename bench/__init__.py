"""Benchmarks, installed as :mod:`tinyfed.bench` (composition layer).

``tinyfed/bench`` is a relative symlink to this folder. The modules behind ``tinyfed bench
link|aggregate|fleet`` (:mod:`tinyfed.bench.link`, :mod:`tinyfed.bench.aggregate`,
:mod:`tinyfed.bench.fleet`) and the stand-alone scripts (``python bench/NAME.py``) live here;
the firmware's own benchmark stays in ``firmware/bench/``. Figures: ``bench/README.md``.
"""
