"""Grammar-based generator of the seqed English->French demo corpus (standard library only).

Writes aligned ``{train,valid,test}.{en,fr}`` and ``MANIFEST.json`` (lines and sha256 per file):

    python data/demo/generate.py --out data/demo --seed 1

The words live in ``lexicon.py`` next to this file; this file holds the grammar.
Every sentence pair is built from one abstract structure (subject, verb, objects, prepositional
phrases, negation, time) and realised twice, so the French is correct by construction: article
and adjective agreement, adjective placement, present-tense conjugation, elision, the
contractions au/aux/du/des, ne ... pas with un/une/des -> de, and irregular plurals.
The same seed gives byte-identical files on any platform (only ``random.Random`` draws and
ordered containers are used).
"""

import argparse
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lexicon.py sits next to this script
from lexicon import (ADJECTIVES, ATTRIBUTIVE, GROUPS, H_MUET, MASS, NOUNS, NUMBERS, POSSESSABLE,  # noqa: E402
                     POSSESSIVES, PREDICATIVE, PREPOSITIONS, PRONOUNS, TIMES, VERBS, expand)

# ----------------------------------------------------------------------------- realisation


_VOWELS = "aeiouàâäéèêëîïôöûùüœ"


def vowel_initial(word):
    """True when French elides before ``word`` (vowel or silent h)."""
    return word[0].lower() in _VOWELS or word.lower() in H_MUET


def join_fr(tokens):
    """French tokens -> text: article elision, au/aux/du/des, then je/ne/de/que elision.

    Args:
        tokens: words with the full forms ``le la je ne de que``, e.g. ``["à", "le", "hôtel"]``.

    Returns:
        The text, e.g. ``"à l'hôtel"``; ``["de", "le", "parc"]`` gives ``"du parc"``.
    """
    toks = list(tokens)
    for i in range(len(toks) - 1):  # le/la -> l' first: "à l'hôtel", not "au hôtel"
        if toks[i] in ("le", "la") and vowel_initial(toks[i + 1]):
            toks[i] = "l'"
    merged = []
    for tok in toks:
        if merged and merged[-1] in ("à", "de") and tok in ("le", "les"):
            merged[-1] = {("à", "le"): "au", ("à", "les"): "aux", ("de", "le"): "du", ("de", "les"): "des"}[
                (merged[-1], tok)]
        else:
            merged.append(tok)
    for i in range(len(merged) - 1):
        if merged[i] in ("je", "ne", "de", "que") and vowel_initial(merged[i + 1]):
            merged[i] = merged[i][:-1] + "'"
    text = ""
    for tok in merged:
        text += tok if not text or text.endswith("'") else " " + tok
    return text


def join_en(tokens):
    """English tokens -> text, choosing "an" before a vowel letter (no word here starts with a silent h)."""
    toks = [("an" if tok == "a" and nxt[0] in "aeiou" else tok) for tok, nxt in zip(tokens, tokens[1:] + [" "])]
    return " ".join(toks)


def sentence(en_tokens, fr_tokens):
    """Both sides as sentences: capitalised first letter and a final period."""
    en, fr = join_en(en_tokens), join_fr(fr_tokens)
    return en[0].upper() + en[1:] + ".", fr[0].upper() + fr[1:] + "."


# ----------------------------------------------------------------------------- phrases


@dataclass(frozen=True)
class Phrase:
    """An English and a French token list, with the agreement features of a noun phrase."""

    en: tuple
    fr: tuple
    gender: str = "m"
    plural: bool = False
    person: int = 1  # index into Verb.fr: 0 je, 1 il/elle, 2 nous, 3 ils/elles
    noun: str = ""  # head noun key of a noun phrase; "" for pronouns and other phrases


def adjective_form(key, gender, plural, before_vowel=False):
    """French form of adjective ``key`` agreeing in gender and number (bel/vieil/nouvel when asked)."""
    a = ADJECTIVES[key]
    if plural:
        return a.f_pl if gender == "f" else a.m_pl
    if gender == "f":
        return a.f
    return a.m_vowel if before_vowel and a.m_vowel else a.m


def determiners_for(noun):
    """The determiner kinds a noun accepts."""
    owners = tuple(POSSESSIVES) if noun in POSSESSABLE else ()
    if noun in MASS:
        return ("the", "generic", "partitive") + owners
    return ("the", "a", "some", "generic") + owners + tuple(NUMBERS)


def noun_phrase(noun, det="the", plural=False, adjective=None, negated=False):
    """A noun phrase in both languages.

    Args:
        noun: key of NOUNS (its English singular).
        det: "the"; "a"; "some" (plural indefinite: bare English plural, French des);
            "generic" (English bare noun, French definite: "likes horses" = "aime les chevaux");
            "partitive" (mass nouns: "bread" = "du pain"); a possessive ("my", "his", ...);
            or a number ("two" ... "five").
        plural: number of the noun for "the", possessives and "generic"; implied by the other kinds.
        adjective: key of ADJECTIVES or None.
        negated: the phrase is the object of a negated verb, so un/une/des/du become de
            ("il n'a pas de chien").

    Returns:
        Phrase with French tokens in full form (``le``, ``de le``), realised by ``join_fr``.
    """
    if det not in determiners_for(noun):
        raise ValueError(f"determiner {det!r} does not fit noun {noun!r}; use one of {determiners_for(noun)}")
    en_pl, fr_sg, fr_pl, gender = NOUNS[noun]
    if det in ("a", "partitive"):
        plural = False
    elif det == "some" or det in NUMBERS or (det == "generic" and noun not in MASS):
        plural = True
    elif noun in MASS:
        plural = False
    fr_noun = fr_pl if plural else fr_sg
    en_noun = en_pl if plural else noun
    fr_adj_pre, fr_adj_post, en_adj = [], [], []
    if adjective is not None:
        a = ADJECTIVES[adjective]
        if noun not in a.attr:
            raise ValueError(f"adjective {adjective!r} is not used with noun {noun!r} in this lexicon")
        form = adjective_form(adjective, gender, plural, before_vowel=vowel_initial(fr_noun))
        (fr_adj_pre if a.pre else fr_adj_post).append(form)
        en_adj.append(adjective)
    head = fr_adj_pre + [fr_noun] + fr_adj_post
    number = 1 if plural else 0
    if det == "the" or det == "generic":
        fr_det = [("les" if plural else "la" if gender == "f" else "le")]
        en_det = ["the"] if det == "the" else []
    elif det == "a":
        fr_det = ["de"] if negated else ["une" if gender == "f" else "un"]
        en_det = ["a"]
    elif det == "some":
        # des -> de after a negation and before a plural adjective placed first ("de beaux chevaux")
        fr_det = ["de"] if negated or fr_adj_pre else ["des"]
        en_det = ["any"] if negated else []
    elif det == "partitive":
        fr_det = ["de"] if negated else ["de", "la" if gender == "f" else "le"]
        en_det = []
    elif det in POSSESSIVES:
        m, f, pl = POSSESSIVES[det]
        fr_det = [pl if plural else f if gender == "f" and not vowel_initial(head[0]) else m]
        en_det = [det]
    else:
        fr_det = [NUMBERS[det]]
        en_det = [det]
    return Phrase(tuple(en_det + en_adj + [en_noun]), tuple(fr_det + head), gender, plural, 1 + 2 * number, noun)


def pronoun(key):
    """A subject pronoun ("I", "he", "she", "we", "they", "they (f)")."""
    fr, gender, plural, person = PRONOUNS[key]
    return Phrase((key.split()[0],), (fr,), gender, plural, person)


def prep_phrase(prep, np):
    """``prep`` + noun phrase; contractions and elisions happen in ``join_fr``."""
    return Phrase(tuple(prep.split()) + np.en, tuple(PREPOSITIONS[prep]) + np.fr)


def words(en, fr):
    """A fixed complement: English and French token lists given as strings."""
    return Phrase(tuple(en.split()), tuple(fr.split()))


def clause(subject, verb, complements=(), negated=False, en_verb=None):
    """Subject + present-tense verb (+ ne ... pas) + complements, in both languages.

    Args:
        subject: Phrase from ``noun_phrase`` or ``pronoun``; its ``person`` picks the verb form.
        verb: key of VERBS for French (and English unless ``en_verb`` is given).
        complements: Phrases placed after the verb in both languages.
        negated: English "do/does not" (or "is not"), French "ne ... pas" around the verb.
        en_verb: English verb key when it differs ("is hungry" = "a faim").

    Returns:
        (English tokens, French tokens).
    """
    v, ev = VERBS[verb], VERBS[en_verb or verb]
    third_singular = subject.person == 1
    if ev.en == "be":
        en_v = [{0: "am", 1: "is"}.get(subject.person, "are")] + (["not"] if negated else [])
    elif negated:
        en_v = ["does" if third_singular else "do", "not"] + ev.en.split()
    else:
        en_v = (ev.en_3s if third_singular else ev.en).split()
    fr_v = ["ne", v.fr[subject.person], "pas"] if negated else [v.fr[subject.person]]
    en = list(subject.en) + en_v
    fr = list(subject.fr) + fr_v
    for c in complements:
        en += c.en
        fr += c.fr
    return en, fr


# ----------------------------------------------------------------------------- sentence frames

# Prepositional phrases of place: tag -> (preposition, noun).
PLACES = {
    "home": [("in", "house"), ("in", "kitchen"), ("in", "bedroom"), ("in", "garden")],
    "town": [("in", "park"), ("in", "street"), ("in", "city"), ("in", "village"), ("near", "station"),
             ("in front of", "school"), ("in front of", "church"), ("near", "market"), ("near", "museum"),
             ("behind", "house"), ("in front of", "hotel"), ("next to", "library"), ("in front of", "shop"),
             ("near", "restaurant"), ("near", "hospital")],
    "nature": [("in", "forest"), ("near", "river"), ("near", "lake"), ("on", "beach"), ("under", "tree"),
               ("in", "park"), ("in", "garden"), ("near", "tree")],
    "work": [("in", "office"), ("in", "hospital"), ("in", "school"), ("in", "restaurant"), ("in", "shop"),
             ("in", "library"), ("in", "hotel"), ("in", "museum"), ("in", "kitchen")],
    "at": [("at", "station"), ("at", "school"), ("at", "hospital"), ("at", "market"), ("at", "office"),
           ("at", "hotel"), ("at", "museum"), ("at", "library"), ("at", "restaurant"), ("at", "beach"),
           ("at", "park"), ("at", "castle")],
    "water": [("in", "river"), ("in", "lake")],
    "rest": [("on", "bed"), ("on", "sofa"), ("on", "bench"), ("under", "tree"), ("in", "bedroom")],
    "things": [("on", "table"), ("on", "chair"), ("in", "box"), ("in", "bag"), ("under", "bed"), ("on", "bed"),
               ("in", "car"), ("near", "door"), ("next to", "window"), ("on", "sofa"), ("under", "table"),
               ("next to", "computer"), ("next to", "phone"), ("in", "kitchen"), ("near", "clock")],
    "street": [("in front of", "house"), ("behind", "house"), ("in", "street"), ("near", "station"),
               ("in front of", "school"), ("next to", "tree"), ("behind", "shop")],
    "shopping": [("at", "market"), ("in", "shop")],
    "boat": [("on", "lake"), ("on", "river"), ("near", "beach")],
}
PLURAL_PLACES = ("tree", "house", "shop")  # "under the trees" = "sous les arbres"

# Transitive verbs: subjects, objects, object determiners, place tags. No verb has both "some"
# or "partitive" and "generic": the English bare noun must map to one French determiner.
TRANSITIVE = {
    "eat": ("PEOPLE dog cat horse mouse rabbit", "FOOD MEALS", "the a some num poss partitive", "home nature"),
    "drink": ("PEOPLE", "DRINKS", "the poss partitive", "home"),
    "like": ("PEOPLE", "FOOD MEALS DRINKS ANIMALS flower book music", "the generic poss", ""),
    "hate": ("PEOPLE", "FOOD MEALS DRINKS ANIMALS music", "the generic", ""),
    "love": ("PEOPLE", "PEOPLE PETS", "the poss", ""),
    "want": ("PEOPLE", "FOOD MEALS DRINKS THINGS VEHICLES PETS", "the a some num partitive", ""),
    "buy": ("PEOPLE", "FOOD MEALS DRINKS CLOTHES book bag phone computer umbrella flower pen clock cup "
            "VEHICLES house", "the a some num partitive", "shopping"),
    "see": ("PEOPLE", "PEOPLE ANIMALS THINGS VEHICLES BUILDINGS tree river lake", "the a some num poss",
            "town nature"),
    "look at": ("PEOPLE", "PEOPLE ANIMALS photo book map flower clock tree house car boat",
                "the a some num poss", "home nature"),
    "look for": ("PEOPLE", "PEOPLE PETS book key bag hat ball phone umbrella pen map", "the a poss", "home town"),
    "find": ("PEOPLE dog", "PETS THINGS", "the a some num poss", "home town nature"),
    "carry": ("PEOPLE", "THINGS apple orange cake pie", "the a some num poss", ""),
    "wash": ("PEOPLE", "CLOTHES car bicycle cup glass plate dog horse window table", "the poss", "home"),
    "prepare": ("PEOPLE", "cake pie soup meat rice", "the a poss", "home"),
    "make": ("PEOPLE", "cake pie bread soup", "the a num partitive", "home"),
    "open": ("PEOPLE", "door window box bag bottle letter book", "the a poss", ""),
    "close": ("PEOPLE", "door window box bag book", "the poss", ""),
    "draw": ("PEOPLE", "ANIMALS house tree flower car boat castle", "the a some num", "home nature"),
    "listen to": ("PEOPLE", "teacher mother father doctor friend music radio bird", "the poss", "home"),
    "wait for": ("PEOPLE dog", "PEOPLE bus train", "the poss", "town at"),
    "clean": ("PEOPLE", "kitchen bedroom house table car window office", "the poss", ""),
    "read": ("PEOPLE", "book letter newspaper map", "the a poss", "home rest"),
    "write": ("PEOPLE", "letter book", "the a", "home"),
    "take": ("PEOPLE", "THINGS apple orange egg cake bus train", "the a poss", ""),
    "have": ("PEOPLE", "PETS THINGS car bicycle boat house brother sister friend uncle aunt", "a some num", ""),
    "visit": ("PEOPLE", "museum church castle city village", "the a", ""),
    "leave": ("PEOPLE", "house school office hospital hotel restaurant city village park station library",
              "the poss", ""),
    "use": ("PEOPLE", "phone computer knife key bicycle map pen", "the a poss", ""),
    "bring": ("PEOPLE", "FOOD MEALS DRINKS THINGS", "the a some num poss partitive", ""),
    "help": ("PEOPLE", "PEOPLE", "the poss", "home work"),
    "call": ("PEOPLE", "PEOPLE dog cat", "the poss", ""),
}

# Intransitive verbs: subjects, place tags, whether "with ..." fits.
INTRANSITIVE = {
    "sleep": ("PEOPLE dog cat mouse rabbit bird", "home rest", False),
    "walk": ("PEOPLE dog horse", "town nature", True),
    "work": ("PEOPLE", "work home", True),
    "play": ("PEOPLE dog cat", "home nature town", True),
    "sing": ("PEOPLE bird", "home town", True),
    "dance": ("PEOPLE", "home town", True),
    "swim": ("PEOPLE dog duck", "water", True),
    "run": ("PEOPLE dog cat horse rabbit mouse", "town nature", True),
    "wait": ("PEOPLE dog", "town at", True),
    "eat": ("PEOPLE dog cat", "home nature work", True),
    "read": ("PEOPLE", "home rest work", False),
}

# Three-place verbs: objects, recipients ("gives the apple to the horse" = "donne la pomme au cheval").
DITRANSITIVE = {
    "give": ("THINGS FOOD MEALS", "PEOPLE"),
    "show": ("photo book map letter key", "PEOPLE"),
    "send": ("letter book photo flower", "PEOPLE"),
}
FEEDING = ("FOOD MEALS", "PETS")  # "gives bread to the ducks" = "donne du pain aux canards"

DESTINATIONS = expand("park garden school market station library hotel hospital office restaurant museum church "
                      "beach castle shop lake village")
ARRIVALS = expand("station school office hotel hospital museum restaurant library market castle village")
HOMES = expand("house city village castle")

DET_WEIGHTS = {"the": 6, "a": 3, "some": 2, "generic": 4, "partitive": 4, "poss": 2, "num": 1}


def _vary(rng, kinds):
    """Expand "poss" / "num" into a concrete determiner."""
    if kinds == "poss":
        return rng.choice(list(POSSESSIVES))
    if kinds == "num":
        return rng.choice(list(NUMBERS))
    return kinds


@lru_cache(maxsize=None)
def _kinds(noun, dets, negated, allow_plural, subject):
    """The determiner kinds of ``dets`` that fit ``noun`` in this position."""
    countable = noun not in MASS
    fits = determiners_for(noun)

    def usable(kind):
        if kind == "poss":
            return noun in POSSESSABLE
        if kind == "num":
            return countable and allow_plural and not negated
        if kind == "a" and subject and noun in GROUPS["KIN"]:
            return False
        if kind in ("some", "generic") and countable and not allow_plural:
            return False
        return kind in fits

    return tuple(k for k in dets.split() if usable(k))


@lru_cache(maxsize=None)
def _candidates(nouns, dets, negated, allow_plural, subject):
    """The nouns of ``nouns`` that fit at least one determiner kind of ``dets``."""
    return tuple(n for n in nouns if _kinds(n, dets, negated, allow_plural, subject))


def random_np(rng, nouns, dets="the a num poss", negated=False, adj_p=0.25, plural_p=0.35, allow_plural=True,
              subject=False):
    """A random noun phrase over noun keys ``nouns`` with one of the determiner kinds ``dets``.

    Kinds are those of ``noun_phrase`` plus "poss" (any possessive) and "num" (any number).
    Nouns that fit none of the kinds are skipped; a ``subject`` of kinship takes no "a".
    """
    noun = rng.choice(_candidates(tuple(nouns), dets, negated, allow_plural, subject))
    kinds = _kinds(noun, dets, negated, allow_plural, subject)
    det = _vary(rng, rng.choices(kinds, weights=[DET_WEIGHTS[k] for k in kinds])[0])
    one_only = det in POSSESSIVES and noun in ("mother", "father")  # not "her fathers"
    plural = allow_plural and noun not in MASS and not one_only and rng.random() < plural_p
    choices = ATTRIBUTIVE[noun]
    adjective = rng.choice(choices) if choices and rng.random() < adj_p else None
    return noun_phrase(noun, det, plural, adjective, negated)


def random_subject(rng, nouns, pronoun_p=0.35):
    """A subject: sometimes a pronoun when the nouns include people, else a noun phrase."""
    if rng.random() < pronoun_p and set(nouns) & set(GROUPS["PEOPLE"]):
        return pronoun(rng.choice(["I", "he", "she", "we", "they"]))
    return random_np(rng, nouns, "the a num poss", plural_p=0.3, subject=True)


def random_place(rng, tags):
    """A place phrase from tags of PLACES, e.g. "under the big tree" = "sous le grand arbre"."""
    options = [p for tag in tags.split() for p in PLACES[tag]]
    prep, noun = rng.choice(options)
    kinds = ["the"] if prep == "at" else _kinds(noun, "the a poss", False, True, False)
    det = _vary(rng, rng.choices(kinds, weights=[{"the": 7, "a": 2, "poss": 2}[k] for k in kinds])[0])
    plural = noun in PLURAL_PLACES and prep != "in" and det != "a" and rng.random() < 0.3
    choices = ATTRIBUTIVE[noun]
    adjective = rng.choice(choices) if choices and prep != "at" and rng.random() < 0.2 else None
    return prep_phrase(prep, noun_phrase(noun, det, plural, adjective))


def random_time(rng):
    key = rng.choice(list(TIMES))
    return Phrase(tuple(key.split()), tuple(TIMES[key]))


def _extras(rng, place_tags="", with_ok=False, place_p=0.4, time_p=0.12):
    extras = []
    if place_tags and rng.random() < place_p:
        extras.append(random_place(rng, place_tags))
    if with_ok and rng.random() < 0.15:
        extras.append(prep_phrase("with", random_np(rng, expand("PEOPLE dog"), "the poss", adj_p=0.1)))
    if rng.random() < time_p:
        extras.append(random_time(rng))
    return extras


def transitive(rng, negated):
    verb = rng.choice(list(TRANSITIVE))
    subjects, objects, dets, tags = TRANSITIVE[verb]
    obj = random_np(rng, expand(objects), dets, negated=negated)
    return clause(random_subject(rng, expand(subjects)), verb, [obj] + _extras(rng, tags), negated)


def intransitive(rng, negated):
    verb = rng.choice(list(INTRANSITIVE))
    subjects, tags, with_ok = INTRANSITIVE[verb]
    subject = random_subject(rng, expand(subjects))
    return clause(subject, verb, _extras(rng, tags, with_ok, place_p=0.8), negated)


def ditransitive(rng, negated):
    verb = rng.choice(list(DITRANSITIVE))
    objects, recipients = FEEDING if verb == "give" and rng.random() < 0.3 else DITRANSITIVE[verb]
    obj = random_np(rng, expand(objects), "the a some num poss partitive", negated=negated)
    recipient = random_np(rng, expand(recipients), "the a poss", adj_p=0.15)
    return clause(random_subject(rng, expand("PEOPLE")), verb, [obj, prep_phrase("to", recipient)], negated)


def talk(rng, negated):
    if rng.random() < 0.5:
        target = prep_phrase("to", random_np(rng, expand("PEOPLE"), "the a poss"))
    else:
        nouns = expand("PEOPLE ANIMALS book photo VEHICLES BUILDINGS OUTSIDE music")
        target = prep_phrase("about", random_np(rng, nouns, "the a poss num"))
    return clause(random_subject(rng, expand("PEOPLE")), "talk", [target] + _extras(rng, "home town"), negated)


def motion(rng, negated):
    """go to / arrive at / live in."""
    subject = random_subject(rng, expand("PEOPLE"))
    kind = rng.choice(["go", "go", "arrive", "live"])
    if kind == "live":
        place = prep_phrase("in", random_np(rng, HOMES, "the a poss", allow_plural=False))
        return clause(subject, "live", [place], negated)
    nouns = DESTINATIONS if kind == "go" else ARRIVALS
    place = prep_phrase("to" if kind == "go" else "at", random_np(rng, nouns, "the", adj_p=0.15, allow_plural=False))
    extras = _extras(rng, with_ok=kind == "go", time_p=0.25)
    return clause(subject, kind, [place] + extras, negated)


# adjectives said of a pronoun subject: those said of any adult
PRONOUN_PREDICATIVE = tuple(k for k in PREDICATIVE["man"] if k in PREDICATIVE["woman"])
PREDICABLE = tuple(n for n in NOUNS if PREDICATIVE[n])  # nouns that can be the subject of "is <adjective>"


def be_adjective(rng, negated, subject=None):
    """"The soup is hot." = "La soupe est chaude." (the adjective agrees with the subject)."""
    if subject is None:
        if rng.random() < 0.3:
            subject = pronoun(rng.choice(["I", "he", "she", "we", "they"]))
        else:
            subject = random_np(rng, PREDICABLE, "the poss num", adj_p=0.0, subject=True)
    choices = PREDICATIVE[subject.noun] if subject.noun else PRONOUN_PREDICATIVE
    key = rng.choice(choices)
    form = adjective_form(key, subject.gender, subject.plural)
    return clause(subject, "be", [Phrase((key,), (form,))], negated)


def be_place(rng, negated):
    """"The cat is under the table." = "Le chat est sous la table." """
    kind = rng.choice(["people", "people", "pets", "farm", "things", "things", "vehicles", "boat"])
    subjects, tags = {
        "people": ("PEOPLE", "home town nature work at"),
        "pets": ("dog cat mouse rabbit bird", "home nature rest things"),
        "farm": ("horse cow duck hen", "nature"),
        "things": ("THINGS FOOD", "things"),
        "vehicles": ("car bicycle", "street"),
        "boat": ("boat", "boat"),
    }[kind]
    subject = random_subject(rng, expand(subjects), pronoun_p=0.3)
    return clause(subject, "be", [random_place(rng, tags)] + _extras(rng, time_p=0.1), negated)


def hungry(rng, negated, subject=None):
    """"The dog is hungry." = "Le chien a faim." (avoir faim / avoir soif)."""
    subject = subject or random_subject(rng, expand("PEOPLE ANIMALS"))
    en, fr = rng.choice([("hungry", "faim"), ("thirsty", "soif")])
    return clause(subject, "have", [words(en, fr)] + _extras(rng, time_p=0.15), negated, en_verb="be")


def think(rng, negated):
    """"The girls think that they are tired." = "Les filles pensent qu'elles sont fatiguées."

    The main verb is never negated: "ne pense pas que" takes the subjunctive.
    """
    subject = random_subject(rng, expand("PEOPLE"))
    if rng.random() < 0.6:
        if not subject.noun:
            inner = pronoun(subject.en[0])
        else:
            key = {(False, "m"): "he", (False, "f"): "she", (True, "m"): "they", (True, "f"): "they (f)"}
            inner = pronoun(key[(subject.plural, subject.gender)])
        body = hungry(rng, negated, inner) if rng.random() < 0.2 else be_adjective(rng, negated, inner)
    else:
        body = be_adjective(rng, negated, random_np(rng, PREDICABLE, "the poss", adj_p=0.0, subject=True))
    return clause(subject, "think", [Phrase(("that",) + tuple(body[0]), ("que",) + tuple(body[1]))])


FRAMES = {transitive: 30, intransitive: 15, be_adjective: 12, be_place: 8, motion: 11, ditransitive: 7,
          talk: 6, think: 5, hungry: 3}


def random_pair(rng, negation_p=0.2, min_words=3, max_words=15):
    """One (English, French) sentence pair, each side between ``min_words`` and ``max_words`` words."""
    frames = list(FRAMES)
    while True:
        frame = rng.choices(frames, weights=[FRAMES[f] for f in frames])[0]
        en, fr = sentence(*frame(rng, rng.random() < negation_p))
        if all(min_words <= len(s.split()) <= max_words for s in (en, fr)):
            return en, fr


# ----------------------------------------------------------------------------- corpus


def build_corpus(seed, n_train=20000, n_valid=500, n_test=500):
    """Splits of distinct English sentences: {"train": [(en, fr), ...], "valid": ..., "test": ...}."""
    rng = random.Random(seed)
    total = n_train + n_valid + n_test
    pairs = {}
    for _ in range(total * 20):
        en, fr = random_pair(rng)
        pairs.setdefault(en, fr)
        if len(pairs) == total:
            break
    else:
        raise ValueError(f"the grammar gave only {len(pairs)} distinct sentences for {total} requested; "
                         "ask for fewer with --train/--valid/--test")
    items = list(pairs.items())
    rng.shuffle(items)
    return {"valid": items[:n_valid], "test": items[n_valid:n_valid + n_test], "train": items[n_valid + n_test:]}


def write_corpus(out, seed, n_train=20000, n_valid=500, n_test=500):
    """Write the six text files and MANIFEST.json under ``out``; returns the manifest dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, items in build_corpus(seed, n_train, n_valid, n_test).items():
        for side, lang in enumerate(("en", "fr")):
            data = "".join(pair[side] + "\n" for pair in items).encode("utf-8")
            (out / f"{split}.{lang}").write_bytes(data)
            files[f"{split}.{lang}"] = {"lines": len(items), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "generator": "data/demo/generate.py",
        "command": f"python data/demo/generate.py --out data/demo --seed {seed}"
                   + ("" if (n_train, n_valid, n_test) == (20000, 500, 500)
                      else f" --train {n_train} --valid {n_valid} --test {n_test}"),
        "seed": seed,
        "files": dict(sorted(files.items())),
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--valid", type=int, default=500)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args(argv)
    if min(args.train, args.valid, args.test) < 0:
        parser.error("--train, --valid and --test must be >= 0")
    manifest = write_corpus(args.out, args.seed, args.train, args.valid, args.test)
    for name, info in manifest["files"].items():
        print(f"{name}\t{info['lines']}\t{info['sha256']}")


if __name__ == "__main__":
    main()
