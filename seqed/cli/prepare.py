"""`seqed prepare`: download or copy a corpus into aligned text files."""

from __future__ import annotations

import argparse
import sys

EPILOG_PREPARE = """examples:
  seqed prepare multi30k --data-dir ../shared/data/multi30k --out runs/data/multi30k
  seqed prepare multi30k --out runs/data/multi30k                 # download (checksums verified)
  seqed prepare tatoeba --tsv eng-fra.tsv --out runs/data/tatoeba --seed 1 --valid 2000 --test 2000
  seqed prepare wmt14 --out runs/data/wmt14 --limit 2000000 --shuffle-seed 1
"""


def register(sub) -> None:
    p = sub.add_parser("prepare", help="download or copy a corpus into aligned {split}.en/.fr files",
                       description="Prepare an English-French corpus into a directory of aligned plain-text "
                                   "files {split}.en / {split}.fr plus prepare.json (source, counts, sha256 "
                                   "checksums, seed). Recipes point $SEQED_DATA at the parent directory.",
                       epilog=EPILOG_PREPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    corpora = p.add_subparsers(dest="corpus", metavar="CORPUS")

    c = corpora.add_parser("multi30k", help="Multi30k Task 1 (train, val, test2016, test2017, mscoco2017)",
                           description="Multi30k Task 1 en-fr. With --data-dir, copy the files from a local "
                                       "directory (names like test2016.en or upstream test_2016_flickr.en, "
                                       "optionally .gz); otherwise download the raw .gz files and verify them "
                                       "against data/manifests/multi30k.json.")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--data-dir", default=None, help="local directory with the files (no download)")
    c.add_argument("--base-url", default=None, help="download from here instead of the manifest's URL "
                                                     "(https:// or file://; files <upstream>.<lang>.gz)")
    c.add_argument("--manifest", default=None, help="manifest with the checksums (default: data/manifests/"
                                                     "multi30k.json)")
    c.set_defaults(func=cmd_prepare_multi30k)

    c = corpora.add_parser("tatoeba", help="Tatoeba pairs from a TSV file, split by English sentence",
                           description="Tatoeba en-fr from the manythings.org TSV export (english<TAB>french"
                                       "[<TAB>attribution]). The split is seeded and by English sentence: no "
                                       "English sentence is in two splits; --valid/--test count distinct English "
                                       "sentences.")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--tsv", required=True, help="the TSV file (e.g. ../shared/data/tatoeba/eng-fra.tsv)")
    c.add_argument("--seed", type=int, default=1, help="split seed (default 1)")
    c.add_argument("--valid", type=int, default=2000, help="English sentences in valid (default 2000)")
    c.add_argument("--test", type=int, default=2000, help="English sentences in test (default 2000)")
    c.set_defaults(func=cmd_prepare_tatoeba)

    c = corpora.add_parser("wmt14", help="WMT14 en-fr from the Hugging Face hub + newstest2014 from sacreBLEU",
                           description="WMT14 en-fr: train (streamed from `datasets`, hub wmt14/fr-en), valid = "
                                       "newstest2013 (hub split 'validation'), test = newstest2014 from "
                                       "sacreBLEU (-t wmt14 -l en-fr). Needs the network (or filled caches).")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--limit", type=int, default=None, metavar="N", help="at most N training pairs")
    c.add_argument("--shuffle-seed", type=int, default=None, metavar="SEED",
                   help="stream the training split shuffled (shard order + a 10k-pair buffer): with --limit, a "
                        "sample of all its corpora instead of the first ones")
    c.add_argument("--test", default="sacrebleu", choices=("sacrebleu", "hub", "none"),
                   help="where newstest2014 comes from (default sacrebleu)")
    c.add_argument("--name", default="wmt14", help="hub dataset name (default wmt14)")
    c.add_argument("--config", default="fr-en", help="hub dataset config (default fr-en)")
    c.set_defaults(func=cmd_prepare_wmt14)
    p.set_defaults(func=usage(p))


def usage(parser: argparse.ArgumentParser):
    """A command that only groups subcommands: print its help, exit 2."""
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show


def _report(record: dict, out: str) -> None:
    counts = ", ".join(f"{name} {info['pairs']}" for name, info in record["splits"].items())
    print(f"prepared {record['source']} into {out}: {counts} pairs (see {out}/prepare.json)", file=sys.stderr)


def cmd_prepare_multi30k(args: argparse.Namespace) -> int:
    from seqed.data.corpora import prepare_multi30k

    _report(prepare_multi30k(args.out, data_dir=args.data_dir, base_url=args.base_url, manifest=args.manifest),
            args.out)
    return 0


def cmd_prepare_tatoeba(args: argparse.Namespace) -> int:
    from seqed.data.corpora import prepare_tatoeba

    _report(prepare_tatoeba(args.out, tsv=args.tsv, valid=args.valid, test=args.test, seed=args.seed), args.out)
    return 0


def cmd_prepare_wmt14(args: argparse.Namespace) -> int:
    from seqed.data.corpora import prepare_wmt14

    _report(prepare_wmt14(args.out, limit=args.limit, name=args.name, config=args.config, test=args.test,
                          shuffle_seed=args.shuffle_seed), args.out)
    return 0
