"""Program output is decoded as UTF-8 incrementally, across frame boundaries."""

from icee_api.session.decoding import StreamDecoder


def test_multibyte_character_split_across_frames_survives() -> None:
    data = "héllo → 世界 🎉\n".encode()
    decoder = StreamDecoder()
    out = "".join(decoder.decode(data[i : i + 1]) for i in range(len(data)))
    assert out + decoder.flush() == "héllo → 世界 🎉\n"


def test_partial_character_is_held_back_not_replaced() -> None:
    decoder = StreamDecoder()
    euro = "€".encode()
    assert decoder.decode(b"a" + euro[:2]) == "a"
    assert decoder.decode(euro[2:]) == "€"


def test_invalid_bytes_become_replacement_characters() -> None:
    decoder = StreamDecoder()
    assert decoder.decode(b"ok\xff\xfe!") == "ok\ufffd\ufffd!"


def test_incomplete_character_at_end_of_stream() -> None:
    decoder = StreamDecoder()
    assert decoder.decode("€".encode()[:1]) == ""
    assert decoder.flush() == "\ufffd"
