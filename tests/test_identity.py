"""refunds/identity.py: normal forms, look-alike skeletons, and which values are too ambiguous to accept."""

from __future__ import annotations

import pytest

from refunds.identity import ambiguity, keys, normalise, same_person, skeleton, unambiguous


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("maria", "maria"),
        ("  Maria  ", "maria"),
        ("\uff2d\uff41\uff52\uff49\uff41", "maria"),  # full-width
        ("mar\u200bia", "maria"),
        ("m\u200ca\u200dr\u2060i\ufeffa", "maria"),
        ("ma\u00adria", "maria"),  # soft hyphen
        ("ma\u034fria\ufe0f", "maria"),  # combining grapheme joiner, variation selector: ignorable, not Cf
        ("Jos\u00e9   Garc\u00eda", "jos\u00e9 garc\u00eda"),  # inner spaces collapsed, accents kept
        ("Jose\u0301", "jos\u00e9"),  # decomposed and composed accents are one
        ("STRASSE", "strasse"),
        ("Stra\u00dfe", "strasse"),  # case folding, not lower()
        ("Maria@Example.COM", "maria@example.com"),
        ("\u200b", ""),
    ],
)
def test_normalise_folds_width_case_spacing_and_invisible_characters(raw: str, normal: str) -> None:
    assert normalise(raw) == normal


@pytest.mark.parametrize("look_alike", ["mar\u0456a", "m\u0430ria", "\u043c\u0430ri\u0430", "MAR\u0406A", "mar\u0131a"])
def test_look_alikes_from_other_scripts_share_the_skeleton_of_the_latin_name(look_alike: str) -> None:
    assert normalise(look_alike) != "maria"
    assert skeleton(look_alike) == skeleton("maria")


@pytest.mark.parametrize("other", ["mariana", "marta", "maria2", "ana", "\u041c\u0430\u0440\u0438\u044f"])
def test_different_names_keep_different_skeletons(other: str) -> None:
    assert skeleton(other) != skeleton("maria")


def test_an_email_is_known_by_itself_and_by_its_local_part_without_a_tag() -> None:
    assert keys("Maria+Refunds@Example.com") == {"maria+refunds@example.com", "maria@example.com", "maria"}
    assert keys("maria") == {"maria"}
    assert keys("\u200b \u2060") == frozenset()


@pytest.mark.parametrize(
    "requester",
    ["maria", "maria ", " maria", "mar\u200bia", "mar\u0456a", "\uff4d\uff41\uff52\uff49\uff41", "maria@example.com",
     "maria@elsewhere.example", "mgarcia+x@corp.example", "u024maria"],
)
def test_same_person_compares_the_requester_with_every_identity(requester: str) -> None:
    assert same_person(requester, ["maria", "mgarcia@corp.example", "U024MARIA"])


@pytest.mark.parametrize("requester", ["ana", "ana@example.com", "intake", "", "\u200b", "mariam"])
def test_same_person_is_false_for_someone_else_and_for_nothing_visible(requester: str) -> None:
    assert not same_person(requester, ["maria", "mgarcia@corp.example", "U024MARIA"])


@pytest.mark.parametrize(
    "value",
    ["mar\u200bia", "ma\u200dria", "ma\u200cria", "mari\u2060a", "\ufeffmaria", "ma\u00adria", "ma\u202eria",
     "maria\n", "ma\tria", "ma\x00ria", "ma\u2028ria", "ma\u034fria", "mar\u0456a", "m\u0430ria@example.com"],
)
def test_invisible_characters_and_words_mixing_scripts_are_ambiguous(value: str) -> None:
    assert ambiguity(value) is not None
    with pytest.raises(ValueError, match=r"^requested_by: must not"):
        unambiguous("requested_by")(value)


@pytest.mark.parametrize(
    "value",
    ["maria", " maria ", "\uff4d\uff41\uff52\uff49\uff41", "Jos\u00e9 Garc\u00eda",
     "\u0414\u043c\u0438\u0442\u0440\u0438\u0439", "\u0418\u0432\u0430\u043d Petrov",
     "\u5c71\u7530\u305f\u308d\u3046", "\uae40\ucca0\uc218", "O'Brien",
     "maria@example.com", "support-bot #3"],
)
def test_ordinary_names_in_any_one_script_are_not_ambiguous(value: str) -> None:
    assert ambiguity(value) is None
    assert unambiguous("requested_by")(value) == value


MARIA = ["maria", "maria@example.com", "U024MARIA"]


@pytest.mark.parametrize(
    ("requester", "named"),
    [
        ("Maria <maria@example.com>", {"maria", "maria@example.com"}),
        ('"Maria" <maria@example.com>', {"maria", "maria@example.com"}),
        ("<@U024MARIA>", {"uo24maria"}),  # TS #39's skeleton reads 0 as o
        ("<@U024MARIA|maria>", {"uo24maria", "maria"}),
        ("@maria", {"maria"}),
        ("mailto:maria@example.com", {"maria@example.com", "maria"}),
        ("<mailto:maria@example.com>", {"maria@example.com", "maria"}),
        ('"maria"@example.com', {"maria@example.com", "maria"}),
    ],
)
def test_a_value_is_known_by_the_keys_of_every_identity_it_names(requester: str, named: set[str]) -> None:
    assert named <= keys(requester)
    assert same_person(requester, MARIA)


@pytest.mark.parametrize(("look_alike", "plain"), [("rnaria", "maria"), ("vvalter", "walter"), ("clana", "dana"),
                                                   ("RNARIA", "maria"), ("rnar\u0456a", "maria")])
def test_multi_letter_look_alikes_fold_on_both_sides(look_alike: str, plain: str) -> None:
    assert keys(look_alike) == keys(plain)
    assert same_person(look_alike, [plain]) and same_person(plain, [look_alike])


@pytest.mark.parametrize("requester", ["Ana <ana@example.com>", "<@U024ANA|ana>", "@ana", "mailto:ana@example.com",
                                       '"ana"@example.com', "Ana Maria", "José García <jose@example.com>"])
def test_other_people_in_the_same_forms_are_not_maria(requester: str) -> None:
    assert not same_person(requester, MARIA)
