"""The keyword corpus: WAV input/output, espeak-ng synthesis and Speech Commands-layout folders.

* :mod:`tinyfed.data.wav` -- ``read_wav`` (any PCM WAV to 16 kHz mono int16) and ``write_wav``;
* :mod:`tinyfed.data.synth` -- synthesize a keyword corpus with espeak-ng, split by voice;
* :mod:`tinyfed.data.dataset` -- read any Speech Commands-layout folder into a ``Dataset``;
* :mod:`tinyfed.data.cli` -- the ``tinyfed data`` command.
"""
