"""The bundled demo corpus (data/demo): checksums, determinism, splits and French grammar rules."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
SPLITS = ("train", "valid", "test")
DATA_FILES = [f"{split}.{lang}" for split in SPLITS for lang in ("en", "fr")]


def _load_generator():
    spec = importlib.util.spec_from_file_location("demo_generate", DEMO / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _lines(name):
    return (DEMO / name).read_text(encoding="utf-8").splitlines()


def fr(*tokens):
    return gen.join_fr(tokens)


def fr_np(*args, **kwargs):
    return gen.join_fr(gen.noun_phrase(*args, **kwargs).fr)


def pair(subject, verb, complements=(), negated=False, en_verb=None):
    return gen.sentence(*gen.clause(subject, verb, complements, negated, en_verb))


# ----------------------------------------------------------------------------- committed files


def test_committed_files_match_manifest():
    manifest = json.loads((DEMO / "MANIFEST.json").read_text(encoding="utf-8"))
    assert sorted(manifest["files"]) == sorted(DATA_FILES)
    for name, info in manifest["files"].items():
        data = (DEMO / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], f"{name} changed; rerun {manifest['command']}"
        assert data.count(b"\n") == info["lines"]
    assert {name: info["lines"] for name, info in manifest["files"].items()} == {
        "train.en": 20000, "train.fr": 20000, "valid.en": 500, "valid.fr": 500, "test.en": 500, "test.fr": 500}


def test_readme_lists_the_manifest_checksums():
    readme = (DEMO / "README.md").read_text(encoding="utf-8")
    manifest = json.loads((DEMO / "MANIFEST.json").read_text(encoding="utf-8"))
    for name, info in manifest["files"].items():
        assert info["sha256"] in readme, f"data/demo/README.md lacks the sha256 of {name}"


def test_regenerating_with_the_same_seed_gives_identical_files(tmp_path):
    out = subprocess.run([sys.executable, str(DEMO / "generate.py"), "--out", str(tmp_path), "--seed", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in DATA_FILES + ["MANIFEST.json"]:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name


def test_another_seed_gives_another_corpus():
    a, b = gen.build_corpus(1, 50, 5, 5), gen.build_corpus(2, 50, 5, 5)
    assert a == gen.build_corpus(1, 50, 5, 5)
    assert a["train"] != b["train"]


def test_splits_are_disjoint_by_english_sentence():
    sets = {split: set(_lines(f"{split}.en")) for split in SPLITS}
    for split in SPLITS:
        assert len(sets[split]) == len(_lines(f"{split}.en")), f"duplicate English sentences in {split}.en"
    assert not sets["train"] & sets["valid"]
    assert not sets["train"] & sets["test"]
    assert not sets["valid"] & sets["test"]


def test_lines_are_aligned_well_formed_sentences():
    for split in SPLITS:
        en, fr_ = _lines(f"{split}.en"), _lines(f"{split}.fr")
        assert len(en) == len(fr_)
        for line in en + fr_:
            assert line and line == line.strip() and "  " not in line, repr(line)
            assert line[0].isupper() and line.endswith(".") and line.count(".") == 1, repr(line)
            assert 3 <= len(line.split()) <= 15, repr(line)


def test_corpus_is_small():
    assert sum((DEMO / name).stat().st_size for name in DATA_FILES) < 3_000_000


def test_french_side_never_shows_uncontracted_or_unelided_forms():
    lines = [line.lower() for line in _lines("train.fr")]
    text = "\n".join(lines)
    for bad in (" à le ", " à les ", " de le ", " de les "):
        assert bad not in text, bad
    # after a negation un/une/des/du become de, except after the preposition of "parler de"
    no_parler = "\n".join(line for line in lines if " parl" not in line)
    for bad in ("pas un ", "pas une ", "pas des ", "pas du "):
        assert bad not in no_parler, bad
    for word in ("le", "la", "je", "ne", "de", "que"):
        for vowel in "aeiouéh":
            assert f" {word} {vowel}" not in f" {text}".replace("\n", " "), f"{word} {vowel}"


# ----------------------------------------------------------------------------- grammar rules


def test_adjectives_agree_with_feminine_plural_nouns():
    assert fr_np("girl", "the", plural=True, adjective="happy") == "les filles heureuses"
    assert fr_np("car", "the", plural=True, adjective="white") == "les voitures blanches"
    assert fr_np("house", "some", adjective="old") == "de vieilles maisons"  # des -> de before a plural adjective
    assert fr_np("horse", "some", adjective="beautiful") == "de beaux chevaux"


def test_adjective_placement_and_forms_before_a_vowel():
    assert fr_np("man", "a", adjective="old") == "un vieil homme"
    assert fr_np("bird", "the", adjective="beautiful") == "le bel oiseau"
    assert fr_np("computer", "my", adjective="new") == "mon nouvel ordinateur"
    assert fr_np("car", "a", adjective="red") == "une voiture rouge"
    assert fr_np("tree", "the", plural=True, adjective="old") == "les vieux arbres"


def test_elision_before_a_vowel_or_silent_h():
    assert fr_np("man") == "l'homme"
    assert fr_np("school") == "l'école"
    assert fr_np("school", "her") == "son école"  # mon/ton/son before a feminine vowel
    assert fr_np("clock", "my") == "mon horloge"
    assert pair(gen.pronoun("I"), "like", [gen.noun_phrase("apple", "generic")]) == (
        "I like apples.", "J'aime les pommes.")
    assert pair(gen.pronoun("I"), "live", [gen.prep_phrase("in", gen.noun_phrase("house", "a"))]) == (
        "I live in a house.", "J'habite dans une maison.")


def test_contractions_au_aux_du_des():
    to = gen.prep_phrase
    assert fr(*to("to", gen.noun_phrase("park")).fr) == "au parc"
    assert fr(*to("to", gen.noun_phrase("child", plural=True)).fr) == "aux enfants"
    assert fr(*to("to", gen.noun_phrase("hospital")).fr) == "à l'hôpital"
    assert fr(*to("about", gen.noun_phrase("book")).fr) == "du livre"
    assert fr(*to("near", gen.noun_phrase("tree", plural=True)).fr) == "près des arbres"
    assert fr(*to("next to", gen.noun_phrase("station")).fr) == "à côté de la gare"
    give = [gen.noun_phrase("bread", "partitive"), to("to", gen.noun_phrase("duck", plural=True))]
    assert pair(gen.pronoun("she"), "give", give) == ("She gives bread to the ducks.",
                                                      "Elle donne du pain aux canards.")


def test_negation_with_n_and_de():
    assert pair(gen.pronoun("he"), "have", [gen.noun_phrase("dog", "a", negated=True)], negated=True) == (
        "He does not have a dog.", "Il n'a pas de chien.")
    assert pair(gen.pronoun("we"), "want", [gen.noun_phrase("bird", "some", negated=True)], negated=True) == (
        "We do not want any birds.", "Nous ne voulons pas d'oiseaux.")
    assert pair(gen.pronoun("she"), "drink", [gen.noun_phrase("water", "partitive", negated=True)],
                negated=True) == ("She does not drink water.", "Elle ne boit pas d'eau.")
    tired = gen.Phrase(("tired",), (gen.adjective_form("tired", "f", True),))
    assert pair(gen.noun_phrase("girl", "the", plural=True), "be", [tired], negated=True) == (
        "The girls are not tired.", "Les filles ne sont pas fatiguées.")


def test_conjugation_and_irregular_plurals():
    assert [gen.VERBS["eat"].fr[p] for p in range(4)] == ["mange", "mange", "mangeons", "mangent"]
    assert gen.VERBS["take"].fr == ("prends", "prend", "prenons", "prennent")
    assert gen.VERBS["go"].fr == ("vais", "va", "allons", "vont")
    assert pair(gen.noun_phrase("horse", "three"), "be", [gen.prep_phrase("near", gen.noun_phrase("lake"))]) == (
        "Three horses are near the lake.", "Trois chevaux sont près du lac.")
    assert fr_np("horse", "a") == "un cheval" and fr_np("horse", "some") == "des chevaux"
    assert fr_np("bird", "the", plural=True) == "les oiseaux"
    assert pair(gen.noun_phrase("mouse", "the", plural=True), "eat", [gen.noun_phrase("cheese", "partitive")]) == (
        "The mice eat cheese.", "Les souris mangent du fromage.")


def test_pronoun_agrees_with_a_feminine_plural_antecedent():
    inner = gen.clause(gen.pronoun("they (f)"), "be", [gen.Phrase(("happy",), ("heureuses",))])
    that = gen.Phrase(("that",) + tuple(inner[0]), ("que",) + tuple(inner[1]))
    assert pair(gen.noun_phrase("woman", "the", plural=True), "think", [that]) == (
        "The women think that they are happy.", "Les femmes pensent qu'elles sont heureuses.")


def test_lexicon_invariants():
    for noun, (_, fr_sg, fr_pl, _gender) in gen.NOUNS.items():
        for word in (fr_sg, fr_pl):
            assert not word.startswith("h") or word in gen.H_MUET, f"decide whether the h of {word!r} is muet"
    for verb, (_s, _o, dets, _t) in gen.TRANSITIVE.items():
        kinds = set(dets.split())
        assert not ("generic" in kinds and kinds & {"some", "partitive"}), verb  # one French for a bare noun


def test_user_mistakes_raise_clear_errors(capsys):
    with pytest.raises(ValueError, match="determiner 'a' does not fit noun 'water'"):
        gen.noun_phrase("water", "a")
    with pytest.raises(ValueError, match="adjective 'happy' is not used with noun 'table'"):
        gen.noun_phrase("table", adjective="happy")
    with pytest.raises(SystemExit):
        gen.main(["--train", "-5"])
    assert "--train, --valid and --test must be >= 0" in capsys.readouterr().err
