"""Lexicon of the seqed demo corpus: nouns with gender and plurals, adjectives, verbs, function words.

Data only; ``generate.py`` holds the grammar. About 230 English lemmas. Every French form is
written out (no inflection rules beyond regular -er verbs), so a reviewer can check each word.
"""

from dataclasses import dataclass
from functools import lru_cache

# english, english plural, french, french plural, gender
NOUNS = {
    # people
    "man": ("men", "homme", "hommes", "m"),
    "woman": ("women", "femme", "femmes", "f"),
    "boy": ("boys", "garçon", "garçons", "m"),
    "girl": ("girls", "fille", "filles", "f"),
    "child": ("children", "enfant", "enfants", "m"),
    "doctor": ("doctors", "médecin", "médecins", "m"),
    "teacher": ("teachers", "professeur", "professeurs", "m"),
    "friend": ("friends", "ami", "amis", "m"),
    "student": ("students", "étudiant", "étudiants", "m"),
    "king": ("kings", "roi", "rois", "m"),
    "queen": ("queens", "reine", "reines", "f"),
    "sister": ("sisters", "sœur", "sœurs", "f"),
    "brother": ("brothers", "frère", "frères", "m"),
    "mother": ("mothers", "mère", "mères", "f"),
    "father": ("fathers", "père", "pères", "m"),
    "uncle": ("uncles", "oncle", "oncles", "m"),
    "aunt": ("aunts", "tante", "tantes", "f"),
    "neighbor": ("neighbors", "voisin", "voisins", "m"),
    "cook": ("cooks", "cuisinier", "cuisiniers", "m"),
    # animals
    "dog": ("dogs", "chien", "chiens", "m"),
    "cat": ("cats", "chat", "chats", "m"),
    "bird": ("birds", "oiseau", "oiseaux", "m"),
    "horse": ("horses", "cheval", "chevaux", "m"),
    "cow": ("cows", "vache", "vaches", "f"),
    "mouse": ("mice", "souris", "souris", "f"),
    "duck": ("ducks", "canard", "canards", "m"),
    "rabbit": ("rabbits", "lapin", "lapins", "m"),
    "hen": ("hens", "poule", "poules", "f"),
    "animal": ("animals", "animal", "animaux", "m"),
    # food and drink (the last nine are mass nouns, see MASS)
    "apple": ("apples", "pomme", "pommes", "f"),
    "cake": ("cakes", "gâteau", "gâteaux", "m"),
    "egg": ("eggs", "œuf", "œufs", "m"),
    "orange": ("oranges", "orange", "oranges", "f"),
    "pie": ("pies", "tarte", "tartes", "f"),
    "bread": ("", "pain", "", "m"),
    "soup": ("", "soupe", "", "f"),
    "cheese": ("", "fromage", "", "m"),
    "rice": ("", "riz", "", "m"),
    "meat": ("", "viande", "", "f"),
    "water": ("", "eau", "", "f"),
    "milk": ("", "lait", "", "m"),
    "coffee": ("", "café", "", "m"),
    "tea": ("", "thé", "", "m"),
    "music": ("", "musique", "", "f"),
    "radio": ("radios", "radio", "radios", "f"),
    # things you can carry
    "book": ("books", "livre", "livres", "m"),
    "letter": ("letters", "lettre", "lettres", "f"),
    "cup": ("cups", "tasse", "tasses", "f"),
    "bottle": ("bottles", "bouteille", "bouteilles", "f"),
    "key": ("keys", "clé", "clés", "f"),
    "box": ("boxes", "boîte", "boîtes", "f"),
    "bag": ("bags", "sac", "sacs", "m"),
    "hat": ("hats", "chapeau", "chapeaux", "m"),
    "ball": ("balls", "ballon", "ballons", "m"),
    "flower": ("flowers", "fleur", "fleurs", "f"),
    "glass": ("glasses", "verre", "verres", "m"),
    "knife": ("knives", "couteau", "couteaux", "m"),
    "shirt": ("shirts", "chemise", "chemises", "f"),
    "shoe": ("shoes", "chaussure", "chaussures", "f"),
    "dress": ("dresses", "robe", "robes", "f"),
    "coat": ("coats", "manteau", "manteaux", "m"),
    "phone": ("phones", "téléphone", "téléphones", "m"),
    "umbrella": ("umbrellas", "parapluie", "parapluies", "m"),
    "newspaper": ("newspapers", "journal", "journaux", "m"),
    "pen": ("pens", "stylo", "stylos", "m"),
    "plate": ("plates", "assiette", "assiettes", "f"),
    "photo": ("photos", "photo", "photos", "f"),
    "computer": ("computers", "ordinateur", "ordinateurs", "m"),
    "clock": ("clocks", "horloge", "horloges", "f"),
    "map": ("maps", "carte", "cartes", "f"),
    # furniture and vehicles
    "table": ("tables", "table", "tables", "f"),
    "chair": ("chairs", "chaise", "chaises", "f"),
    "bed": ("beds", "lit", "lits", "m"),
    "bench": ("benches", "banc", "bancs", "m"),
    "sofa": ("sofas", "canapé", "canapés", "m"),
    "car": ("cars", "voiture", "voitures", "f"),
    "bicycle": ("bicycles", "vélo", "vélos", "m"),
    "train": ("trains", "train", "trains", "m"),
    "bus": ("buses", "bus", "bus", "m"),
    "boat": ("boats", "bateau", "bateaux", "m"),
    "plane": ("planes", "avion", "avions", "m"),
    # buildings, rooms and places
    "house": ("houses", "maison", "maisons", "f"),
    "school": ("schools", "école", "écoles", "f"),
    "station": ("stations", "gare", "gares", "f"),
    "library": ("libraries", "bibliothèque", "bibliothèques", "f"),
    "hotel": ("hotels", "hôtel", "hôtels", "m"),
    "hospital": ("hospitals", "hôpital", "hôpitaux", "m"),
    "office": ("offices", "bureau", "bureaux", "m"),
    "restaurant": ("restaurants", "restaurant", "restaurants", "m"),
    "museum": ("museums", "musée", "musées", "m"),
    "church": ("churches", "église", "églises", "f"),
    "castle": ("castles", "château", "châteaux", "m"),
    "shop": ("shops", "magasin", "magasins", "m"),
    "kitchen": ("kitchens", "cuisine", "cuisines", "f"),
    "bedroom": ("bedrooms", "chambre", "chambres", "f"),
    "park": ("parks", "parc", "parcs", "m"),
    "garden": ("gardens", "jardin", "jardins", "m"),
    "forest": ("forests", "forêt", "forêts", "f"),
    "street": ("streets", "rue", "rues", "f"),
    "beach": ("beaches", "plage", "plages", "f"),
    "city": ("cities", "ville", "villes", "f"),
    "village": ("villages", "village", "villages", "m"),
    "river": ("rivers", "rivière", "rivières", "f"),
    "lake": ("lakes", "lac", "lacs", "m"),
    "market": ("markets", "marché", "marchés", "m"),
    "tree": ("trees", "arbre", "arbres", "m"),
    "window": ("windows", "fenêtre", "fenêtres", "f"),
    "door": ("doors", "porte", "portes", "f"),
    "wall": ("walls", "mur", "murs", "m"),
}

# Uncountable in this corpus: no plural, no "a"; "some" is the partitive du / de la / de l'.
MASS = ("bread", "soup", "cheese", "rice", "meat", "water", "milk", "coffee", "tea", "music")

GROUPS = {
    "ADULTS": ("man", "woman", "doctor", "teacher", "friend", "student", "king", "queen", "mother",
               "father", "uncle", "aunt", "neighbor", "cook"),
    "YOUNG": ("boy", "girl", "child", "sister", "brother"),
    "ANIMALS": ("dog", "cat", "bird", "horse", "cow", "mouse", "duck", "rabbit", "hen", "animal"),
    "PETS": ("dog", "cat", "bird", "horse", "cow", "mouse", "duck", "rabbit", "hen"),
    "FOOD": ("apple", "cake", "egg", "orange", "pie"),
    "MEALS": ("bread", "soup", "cheese", "rice", "meat"),
    "DRINKS": ("water", "milk", "coffee", "tea"),
    "THINGS": ("book", "letter", "cup", "bottle", "key", "box", "bag", "hat", "ball", "flower", "glass",
               "knife", "shirt", "shoe", "dress", "coat", "phone", "umbrella", "newspaper", "pen", "plate",
               "photo", "computer", "clock", "map"),
    "CLOTHES": ("hat", "shirt", "shoe", "dress", "coat"),
    "CONTAINERS": ("cup", "bottle", "box", "bag", "glass"),
    "FURNITURE": ("table", "chair", "bed", "bench", "sofa"),
    "VEHICLES": ("car", "bicycle", "train", "bus", "boat", "plane"),
    "BUILDINGS": ("house", "school", "station", "library", "hotel", "hospital", "office", "restaurant",
                  "museum", "church", "castle", "shop"),
    "OUTSIDE": ("park", "garden", "forest", "street", "beach", "city", "village", "river", "lake", "market"),
    "ROOMS": ("kitchen", "bedroom"),
    "FIXTURES": ("tree", "window", "door", "wall"),
}
GROUPS["PEOPLE"] = GROUPS["ADULTS"] + GROUPS["YOUNG"]
# Nouns of kinship: "her brother" is natural, "a brother" as a subject is not.
GROUPS["KIN"] = ("child", "sister", "brother", "mother", "father", "uncle", "aunt", "friend", "neighbor")


@lru_cache(maxsize=None)
def expand(names):
    """Noun keys named by a space-separated list of group names and noun keys, in order, unique."""
    keys = []
    for name in names.split():
        for key in GROUPS.get(name, (name,)):
            if key not in NOUNS:
                raise ValueError(f"unknown noun {key!r} in lexicon entry {names!r}")
            if key not in keys:
                keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class Adjective:
    """French forms of one adjective and the nouns it may qualify.

    ``m_vowel`` is the masculine singular used before a vowel (bel, vieil, nouvel); ``pre`` marks
    the few adjectives placed before the noun; ``attr``/``pred`` are the nouns it qualifies as
    an attribute ("a red car") or after être ("the car is red").
    """

    m: str
    f: str
    m_pl: str
    f_pl: str
    m_vowel: str | None
    pre: bool
    attr: tuple
    pred: tuple


# Nouns that take a possessive (not "her women", "his station").
POSSESSABLE = expand("KIN teacher doctor PETS FOOD MEALS DRINKS THINGS FURNITURE car bicycle boat house garden "
                     "office school bedroom kitchen")


def adj(m, f, m_pl, f_pl, attr, pred=None, m_vowel=None, pre=False):
    attr_keys = expand(attr)
    return Adjective(m, f, m_pl, f_pl, m_vowel, pre, attr_keys, attr_keys if pred is None else expand(pred))


_COLORED = "ball hat shirt shoe dress coat cup bag box book pen car bicycle boat chair door umbrella"
ADJECTIVES = {
    # before the noun (beau, joli, grand, petit, jeune, vieux, bon, nouveau)
    # not with father/mother/brother/sister: beau-père, belle-mère, ... are in-laws
    "beautiful": adj("beau", "belle", "beaux", "belles", "man woman boy girl child king queen ANIMALS flower dress "
                     "hat coat photo car boat house castle church hotel garden park forest beach city village river "
                     "lake tree", m_vowel="bel", pre=True),
    "pretty": adj("joli", "jolie", "jolis", "jolies", "girl flower dress hat house garden village photo bird cup",
                  pre=True),
    # not with shop: un grand magasin is a department store
    "big": adj("grand", "grande", "grands", "grandes", "ANIMALS CONTAINERS FURNITURE VEHICLES house school station "
               "library hotel hospital office restaurant museum church castle park garden forest city river lake "
               "market beach ROOMS FIXTURES cake pie", pre=True),
    "small": adj("petit", "petite", "petits", "petites", "boy girl child ANIMALS THINGS FURNITURE VEHICLES "
                 "BUILDINGS OUTSIDE ROOMS FIXTURES FOOD", pre=True),
    "young": adj("jeune", "jeune", "jeunes", "jeunes", "PEOPLE ANIMALS", pre=True),
    "old": adj("vieux", "vieille", "vieux", "vieilles", "ADULTS ANIMALS book hat coat photo clock bag shoe map "
               "FURNITURE VEHICLES BUILDINGS city village street market garden park tree door wall",
               m_vowel="vieil", pre=True),
    "good": adj("bon", "bonne", "bons", "bonnes", "FOOD MEALS DRINKS book doctor teacher cook student friend "
                "neighbor restaurant hotel", pred="FOOD MEALS DRINKS", pre=True),
    # nouveau is "new" only before the noun; "the car is new" would need neuf.
    "new": adj("nouveau", "nouvelle", "nouveaux", "nouvelles", "book phone computer bag hat shirt shoe dress "
               "coat umbrella pen clock bicycle car boat house school hotel restaurant office shop museum "
               "library hospital friend teacher doctor neighbor student", pred="", m_vowel="nouvel", pre=True),
    # after the noun
    "red": adj("rouge", "rouge", "rouges", "rouges", _COLORED + " apple flower house"),
    "blue": adj("bleu", "bleue", "bleus", "bleues", _COLORED + " flower house bird"),
    "green": adj("vert", "verte", "verts", "vertes", _COLORED + " apple"),
    "black": adj("noir", "noire", "noirs", "noires", "PETS phone computer coffee " + _COLORED),
    "white": adj("blanc", "blanche", "blancs", "blanches", "PETS plate house wall flower " + _COLORED),
    "yellow": adj("jaune", "jaune", "jaunes", "jaunes", _COLORED + " flower house bird apple"),
    "gray": adj("gris", "grise", "gris", "grises", "dog cat horse bird mouse rabbit hat shirt coat bag box car "
                "bicycle chair sofa wall house"),
    "happy": adj("heureux", "heureuse", "heureux", "heureuses", "PEOPLE dog cat horse"),
    "sad": adj("triste", "triste", "tristes", "tristes", "PEOPLE dog cat horse"),
    "tired": adj("fatigué", "fatiguée", "fatigués", "fatiguées", "PEOPLE dog cat horse"),
    "busy": adj("occupé", "occupée", "occupés", "occupées", "ADULTS"),
    "kind": adj("gentil", "gentille", "gentils", "gentilles", "PEOPLE dog"),
    "sick": adj("malade", "malade", "malades", "malades", "PEOPLE ANIMALS"),
    # A person who is hot or cold "a chaud / a froid": these two qualify things only.
    "hot": adj("chaud", "chaude", "chauds", "chaudes", "soup coffee tea milk water bread rice meat pie cake"),
    # not with bedroom: une chambre froide is a cold store
    "cold": adj("froid", "froide", "froids", "froides", "soup coffee tea milk water meat rice river lake"),
    "empty": adj("vide", "vide", "vides", "vides", "CONTAINERS plate bus train street restaurant park house"),
    "full": adj("plein", "pleine", "pleins", "pleines", "CONTAINERS plate bus train restaurant hotel"),
    "clean": adj("propre", "propre", "propres", "propres", "CLOTHES cup glass plate car bedroom kitchen house table "
                 "street water"),
    "dirty": adj("sale", "sale", "sales", "sales", "CLOTHES cup glass plate car bicycle bedroom kitchen house table "
                 "street dog water"),
    "heavy": adj("lourd", "lourde", "lourds", "lourdes", "box bag book table chair computer bottle"),
    "fast": adj("rapide", "rapide", "rapides", "rapides", "car train horse bicycle boat plane dog"),
    "famous": adj("célèbre", "célèbre", "célèbres", "célèbres", "doctor teacher king queen cook museum hotel "
                  "restaurant castle church book city"),
    "delicious": adj("délicieux", "délicieuse", "délicieux", "délicieuses", "FOOD MEALS DRINKS"),
    # cher before the noun means "dear"; after it, "expensive".
    "expensive": adj("cher", "chère", "chers", "chères", "book bag hat shirt shoe dress coat phone computer clock "
                     "umbrella bicycle car boat hotel restaurant house cheese meat"),
    "quiet": adj("calme", "calme", "calmes", "calmes", "PEOPLE dog horse park street village city restaurant hotel "
                 "house bedroom garden lake river"),
}


@dataclass(frozen=True)
class Verb:
    """One verb: English base and third-person singular, French present for je, il/elle, nous, ils/elles."""

    en: str
    en_3s: str
    fr: tuple


def er(infinitive):
    """Present tense of a regular -er verb: (je, il, nous, ils)."""
    stem = infinitive[:-2]
    return (stem + "e", stem + "e", stem + "ons", stem + "ent")


VERBS = {
    "be": Verb("be", "is", ("suis", "est", "sommes", "sont")),
    "have": Verb("have", "has", ("ai", "a", "avons", "ont")),
    "go": Verb("go", "goes", ("vais", "va", "allons", "vont")),
    "make": Verb("make", "makes", ("fais", "fait", "faisons", "font")),
    "see": Verb("see", "sees", ("vois", "voit", "voyons", "voient")),
    "take": Verb("take", "takes", ("prends", "prend", "prenons", "prennent")),
    "eat": Verb("eat", "eats", ("mange", "mange", "mangeons", "mangent")),
    "swim": Verb("swim", "swims", ("nage", "nage", "nageons", "nagent")),
    "sleep": Verb("sleep", "sleeps", ("dors", "dort", "dormons", "dorment")),
    "run": Verb("run", "runs", ("cours", "court", "courons", "courent")),
    "wait": Verb("wait", "waits", ("attends", "attend", "attendons", "attendent")),
    "wait for": Verb("wait for", "waits for", ("attends", "attend", "attendons", "attendent")),
    "read": Verb("read", "reads", ("lis", "lit", "lisons", "lisent")),
    "write": Verb("write", "writes", ("écris", "écrit", "écrivons", "écrivent")),
    "drink": Verb("drink", "drinks", ("bois", "boit", "buvons", "boivent")),
    "want": Verb("want", "wants", ("veux", "veut", "voulons", "veulent")),
    "buy": Verb("buy", "buys", ("achète", "achète", "achetons", "achètent")),
    "open": Verb("open", "opens", ("ouvre", "ouvre", "ouvrons", "ouvrent")),
    "clean": Verb("clean", "cleans", ("nettoie", "nettoie", "nettoyons", "nettoient")),
    "call": Verb("call", "calls", ("appelle", "appelle", "appelons", "appellent")),
    "send": Verb("send", "sends", ("envoie", "envoie", "envoyons", "envoient")),
    "walk": Verb("walk", "walks", er("marcher")),
    "work": Verb("work", "works", er("travailler")),
    "play": Verb("play", "plays", er("jouer")),
    "sing": Verb("sing", "sings", er("chanter")),
    "dance": Verb("dance", "dances", er("danser")),
    "like": Verb("like", "likes", er("aimer")),
    "love": Verb("love", "loves", er("aimer")),
    "hate": Verb("hate", "hates", er("détester")),
    "look at": Verb("look at", "looks at", er("regarder")),
    "look for": Verb("look for", "looks for", er("chercher")),
    "find": Verb("find", "finds", er("trouver")),
    "carry": Verb("carry", "carries", er("porter")),
    "wash": Verb("wash", "washes", er("laver")),
    "prepare": Verb("prepare", "prepares", er("préparer")),
    "close": Verb("close", "closes", er("fermer")),
    "draw": Verb("draw", "draws", er("dessiner")),
    "listen to": Verb("listen to", "listens to", er("écouter")),
    "visit": Verb("visit", "visits", er("visiter")),
    "leave": Verb("leave", "leaves", er("quitter")),
    "use": Verb("use", "uses", er("utiliser")),
    "bring": Verb("bring", "brings", er("apporter")),
    "help": Verb("help", "helps", er("aider")),
    "give": Verb("give", "gives", er("donner")),
    "show": Verb("show", "shows", er("montrer")),
    "talk": Verb("talk", "talks", er("parler")),
    "arrive": Verb("arrive", "arrives", er("arriver")),
    "live": Verb("live", "lives", er("habiter")),
    "think": Verb("think", "thinks", er("penser")),
}

# english -> (french, gender, plural, person); "I" and "we" agree in the masculine.
PRONOUNS = {
    "I": ("je", "m", False, 0),
    "he": ("il", "m", False, 1),
    "she": ("elle", "f", False, 1),
    "we": ("nous", "m", True, 2),
    "they": ("ils", "m", True, 3),
    "they (f)": ("elles", "f", True, 3),  # only as a pronoun referring back to feminine plural nouns
}

# owner -> French (masculine, feminine, plural); mon/ton/son also before a feminine vowel.
POSSESSIVES = {"my": ("mon", "ma", "mes"), "his": ("son", "sa", "ses"), "her": ("son", "sa", "ses"),
               "our": ("notre", "notre", "nos"), "their": ("leur", "leur", "leurs")}
NUMBERS = {"two": "deux", "three": "trois", "four": "quatre", "five": "cinq"}

PREPOSITIONS = {
    "in": ["dans"], "on": ["sur"], "under": ["sous"], "in front of": ["devant"], "behind": ["derrière"],
    "near": ["près", "de"], "next to": ["à", "côté", "de"], "with": ["avec"], "at": ["à"], "to": ["à"],
    "about": ["de"],
}
TIMES = {"today": ["aujourd'hui"], "now": ["maintenant"], "in the morning": ["le", "matin"],
         "in the evening": ["le", "soir"], "every day": ["tous", "les", "jours"]}

# Every French word of the lexicon that starts with h has a silent (muet) h: it elides like a vowel.
H_MUET = frozenset({"homme", "hommes", "hôtel", "hôtels", "hôpital", "hôpitaux", "horloge", "horloges",
                    "heureux", "heureuse", "heureuses", "habite", "habitons", "habitent"})

# noun -> adjectives it takes as an attribute / after être, in ADJECTIVES order
ATTRIBUTIVE = {n: tuple(k for k, a in ADJECTIVES.items() if n in a.attr) for n in NOUNS}
PREDICATIVE = {n: tuple(k for k, a in ADJECTIVES.items() if n in a.pred) for n in NOUNS}
