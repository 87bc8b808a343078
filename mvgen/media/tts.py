"""Offline speech from the libespeak-ng bundled by the ``espeakng-loader`` wheel, through ctypes.

Returns float32 mono samples at eSpeak's native rate (22050 Hz) and the true onset of every word
(eSpeak's word events), which is what makes the demo song's ground-truth timings exact.
The library is process-global: one ``ESpeak`` per process (``ESpeak.shared()``), calls serialized.
Its output also depends on what the process synthesised before (the same text spoken twice differs
slightly), so ``speak_lines`` runs every request in a fresh child process: same input, same samples.
"""

from __future__ import annotations

import ctypes as C
import threading
from dataclasses import dataclass

import numpy as np

from mvgen.errors import MvgenError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EV_LIST_TERMINATED, _EV_WORD = 0, 1


class _EventId(C.Union):
    _fields_ = [("number", C.c_int), ("name", C.c_char_p), ("string", C.c_char * 8)]


class _Event(C.Structure):
    _fields_ = [
        ("type", C.c_int),
        ("unique_identifier", C.c_uint),
        ("text_position", C.c_int),  # 1-based character position of the word
        ("length", C.c_int),
        ("audio_position", C.c_int),  # ms from the start of this synth call
        ("sample", C.c_int),
        ("user_data", C.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CB = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.POINTER(_Event))


@dataclass
class Speech:
    samples: np.ndarray  # float32 mono
    rate: int
    word_onsets: list[float]  # seconds, one per word event, in text order


class ESpeak:
    _instance: "ESpeak | None" = None
    _lock = threading.Lock()

    @classmethod
    def shared(cls) -> "ESpeak":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        import espeakng_loader

        lib = C.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [C.c_int, C.c_int, C.c_char_p, C.c_int]
        lib.espeak_Initialize.restype = C.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CB]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [C.c_char_p]
        lib.espeak_SetVoiceByName.restype = C.c_int
        lib.espeak_SetParameter.argtypes = [C.c_int, C.c_int, C.c_int]
        lib.espeak_SetParameter.restype = C.c_int
        lib.espeak_Synth.argtypes = [C.c_void_p, C.c_size_t, C.c_uint, C.c_int, C.c_uint, C.c_uint,
                                     C.POINTER(C.c_uint), C.c_void_p]
        lib.espeak_Synth.restype = C.c_int
        lib.espeak_Synchronize.restype = C.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise MvgenError(f"eSpeak NG failed to initialise (code {rate}); reinstall espeakng-loader")
        self.lib, self.rate = lib, rate
        self._chunks: list[np.ndarray] = []
        self._onsets: list[float] = []
        self._callback = _SYNTH_CB(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: C.POINTER(C.c_short), count: int, events: C.POINTER(_Event)) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            if events[i].type == _EV_WORD:
                self._onsets.append(events[i].audio_position / 1000.0)
            i += 1
        return 0

    def speak(self, text: str, voice: str = "en-us", words_per_minute: int = 150, pitch: int = 50,
              pitch_range: int = 50) -> Speech:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise MvgenError(f"eSpeak NG has no voice {voice!r}; set music.voice (e.g. en-us, en-gb, fr, es)")
            for parameter, value in ((_RATE, words_per_minute), (_PITCH, pitch), (_RANGE, pitch_range),
                                     (_VOLUME, 100)):
                self.lib.espeak_SetParameter(parameter, int(value), 0)
            self._chunks, self._onsets = [], []
            data = text.encode("utf-8") + b"\0"
            error = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if error != 0:
                raise RuntimeError(f"espeak_Synth failed with code {error}")
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return Speech(pcm.astype(np.float32) / 32768.0, self.rate, list(self._onsets))


def _speak_all(texts: list[str], voices: list[str], words_per_minute: int) -> list[Speech]:
    tts = ESpeak.shared()
    return [tts.speak(text, voice=voice, words_per_minute=words_per_minute) for text, voice in zip(texts, voices)]


def speak_lines(texts: list[str], voice: str | list[str] = "en-us", words_per_minute: int = 150) -> list[Speech]:
    """Speak each text (in one voice, or one voice per text) in a fresh Python process, so the result depends
    only on the arguments. A plain subprocess (``python -m mvgen.media.tts``), not multiprocessing: it works
    whatever start method the parent uses (joblib's loky, submitit, Ray and fan-out workers included)."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from mvgen.fanout import child_env

    voices = [voice] * len(texts) if isinstance(voice, str) else list(voice)
    request = json.dumps({"texts": list(texts), "voices": voices, "words_per_minute": words_per_minute})
    with tempfile.TemporaryDirectory(prefix="mvgen-tts-") as tmp:
        out = Path(tmp) / "speech.npz"
        proc = subprocess.run([sys.executable, "-m", "mvgen.media.tts", str(out)], input=request, text=True,
                              capture_output=True, timeout=600, env=child_env())
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if last.startswith("mvgen.errors.MvgenError: "):
                raise MvgenError(last.split(": ", 1)[1])
            raise RuntimeError(f"the eSpeak process failed: {last}")
        with np.load(out, allow_pickle=False) as data:
            return [Speech(data[f"samples_{i}"], int(data["rate"]), data[f"onsets_{i}"].tolist())
                    for i in range(len(texts))]


def _main(out_path: str) -> None:
    import json
    import sys

    request = json.loads(sys.stdin.read())
    speeches = _speak_all(request["texts"], request["voices"], int(request["words_per_minute"]))
    arrays = {"rate": np.array(speeches[0].rate if speeches else 22050)}
    for i, speech in enumerate(speeches):
        arrays[f"samples_{i}"] = speech.samples.astype(np.float32)
        arrays[f"onsets_{i}"] = np.array(speech.word_onsets, np.float64)
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1])
