import pytest

from seqed.config import Config, ConfigError, config_from_dict, load_config, to_dict


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_validate():
    Config().validate()


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "model:\n  encoder:\n    type: rnn\n    hidden: 64\n  decoder:\n    hidden: 64\ntrain:\n  lr: 0.001\n")
    cfg = load_config(p, ["model.encoder.layers=2", "train.lr=5e-4", "out_dir=runs/x",
                          "data.valid.src=a.en", "data.valid.tgt=a.fr"])
    assert cfg.model.encoder.type == "rnn" and cfg.model.encoder.hidden == 64
    assert cfg.model.encoder.layers == 2 and cfg.train.lr == 5e-4 and cfg.out_dir == "runs/x"
    assert cfg.data.valid.src == "a.en"


def test_unknown_key_suggests_closest(tmp_path):
    p = write(tmp_path, "model:\n  encoder:\n    layerz: 2\n")
    with pytest.raises(ConfigError, match=r"model.encoder.layerz.*Did you mean 'layers'.*Valid keys"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*'train'"):
        load_config(None, ["trian.lr=1"])


@pytest.mark.parametrize("override,message", [
    ("model.encoder.layers=two", "must be an integer"),
    ("model.encoder.layers=-1", "must be positive"),
    ("search.beam=0", "search.beam must be positive"),
    ("train.max_tokens=10", "smaller than one sentence"),
    ("model.decoder.attention=luong", "must be one of"),
    ("model.share_embeddings=maybe", "true or false"),
    ("tokenizer.joint=false", "share_embeddings needs tokenizer.joint"),
    ("train.label_smoothing=1.5", r"in \[0, 1\)"),
])
def test_bad_values_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_incompatible_dot_attention():
    with pytest.raises(ConfigError, match="dot attention"):
        load_config(None, ["model.encoder.type=rnn", "model.decoder.type=rnn", "model.decoder.attention=dot",
                           "model.encoder.hidden=32", "model.decoder.hidden=32", "model.encoder.bidirectional=true"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))


def test_round_trip_through_dict():
    cfg = load_config(None, ["model.encoder.type=rnn", "train.betas=[0.9, 0.99]"])
    again = config_from_dict(to_dict(cfg))
    assert again == cfg
