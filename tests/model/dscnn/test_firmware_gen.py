"""The generated firmware tables: exact values, const arrays, and they compile and read back."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyfed.features import logmel
from tinyfed.model.dscnn import firmware_gen, modelfile, vectors
from tinyfed.model.dscnn.extractor import Extractor

FW = vectors.VECTORS_DIR / "fw"


@pytest.mark.parametrize("value", [0.75, 1.0, -2.5, 1e-30, 0.1, 3.4e38, 0.0, -0.0])
def test_hex_float_is_exact(value: float) -> None:
    text = firmware_gen.hex_float(value)
    assert text.endswith("f")
    assert float.fromhex(text[:-1]) == float(np.float32(value))
    assert np.signbit(float.fromhex(text[:-1])) == np.signbit(value)


def _floats(block: str) -> list[float]:
    return [float.fromhex(v) for v in re.findall(r"(-?0x[0-9a-f.]+p[-+]\d+|-?0\.0)f", block)]


def test_table_header_holds_the_exact_table() -> None:
    text = firmware_gen.TABLE_H.read_text()
    assert text.encode() == firmware_gen.render_table()
    body = text[text.index("kMelWeights") :]
    values = np.array(_floats(body), np.float32).reshape(40, 129)
    np.testing.assert_array_equal(values, logmel.mel_table())
    match = re.search(r"kFirstBin\[kBands\] = \{([^}]*)\}", text)
    assert match is not None
    first = [int(v) for v in match[1].split(",") if v.strip()]
    assert first == [int(np.flatnonzero(r)[0]) for r in logmel.mel_table()]
    assert "constexpr float kMelWeights[kBands][kBins]" in text


def test_weights_source_holds_the_model(extractor: Extractor) -> None:
    files = firmware_gen.render_weights(extractor, "x.bin")
    cpp = files["dscnn_weights.cpp"].decode()
    for layer in extractor.layers:
        ident = firmware_gen._ident(layer.name)
        for suffix, arr in (
            ("Bias", layer.bias),
            ("M", layer.m),
            ("Sh", layer.sh),
            ("Weights", layer.weights),
        ):
            if not arr.size:
                assert f"k{ident}{suffix}" not in cpp
                continue
            match = re.search(rf"const \w+ k{ident}{suffix}\[(\d+)\] = \{{([^}}]*)\}}", cpp)
            assert match is not None, (layer.name, suffix)
            assert int(match[1]) == arr.size
            values = [int(v) for v in match[2].split(",") if v.strip()]
            assert values == arr.ravel().tolist()
    a_block = cpp[cpp.index("kEmbedA[kChannels]") : cpp.index("kEmbedB[kChannels]")]
    np.testing.assert_array_equal(np.array(_floats(a_block), np.float32), extractor.a)
    header = files["dscnn_weights.h"].decode()
    crc = modelfile.crc32(modelfile.to_bytes(extractor))
    assert f"kModelCrc32 = 0x{crc:08x}u" in header
    assert "extern const Layer kLayer[kLayers];" in header


def test_generated_sources_compile_and_read_back(extractor: Extractor, tmp_path: Path) -> None:
    program = tmp_path / "main.cpp"
    program.write_text(
        '#include <stdio.h>\n#include "logmel_table.h"\n#include "dscnn_weights.h"\n'
        "using namespace tinyfed;\n"
        "int main() {\n"
        '  printf("%a %d\\n", (double)logmel_table::kMelWeights[7][9],\n'
        "         logmel_table::kLastBin[39]);\n"
        "  const dscnn_weights::Layer& l = dscnn_weights::kLayer[2];\n"
        '  printf("%d %d %d %d %d\\n", l.weights[4095], (int)l.bias[5], (int)l.m[63], l.sh[0], '
        "(int)l.in_zp);\n"
        '  printf("%d %a\\n", dscnn_weights::kLayer[9].weights == nullptr, '
        "(double)dscnn_weights::kEmbedB[63]);\n"
        "}\n"
    )
    exe = tmp_path / "main"
    subprocess.run(
        [
            "g++",
            "-std=gnu++14",
            "-Wall",
            "-Wextra",
            "-Wshadow",
            "-Wdouble-promotion",
            "-Werror",
            f"-I{firmware_gen.CORE}",
            f"-I{FW}",
            str(program),
            str(FW / "dscnn_weights.cpp"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split(
        "\n"
    )
    table = logmel.mel_table()
    v, last = lines[0].split()
    assert float.fromhex(v) == float(table[7, 9])
    assert int(last) == int(np.flatnonzero(table[39])[-1])
    pw = extractor.layer("ds1.pw")
    assert lines[1].split() == [
        str(int(x)) for x in (pw.weights[63, 63], pw.bias[5], pw.m[63], pw.sh[0], pw.in_zp)
    ]
    null, b63 = lines[2].split()
    assert null == "1"
    assert float.fromhex(b63) == float(extractor.b[63])


def test_main_writes_and_checks_a_given_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = vectors.VECTORS_DIR / "extractor.bin"
    out = tmp_path / "core"
    assert firmware_gen.main(["--model", str(model), "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert firmware_gen.main(["--model", str(model), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "dscnn_weights.cpp",
        "dscnn_weights.h",
        "logmel_table.h",
    ]
    assert (out / "dscnn_weights.cpp").read_bytes() == (FW / "dscnn_weights.cpp").read_bytes()
    assert firmware_gen.main(["--model", str(model), "--out", str(out), "--check"]) == 0
    assert firmware_gen.main(["--model", str(tmp_path / "nope.bin"), "--out", str(out)]) == 2
    assert "nope.bin does not exist" in capsys.readouterr().err
