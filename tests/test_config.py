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
    ("model.encoder.positions=rotary", "must be one of"),
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


# ---------------------------------------------------------------------------------------------
# keys that apply to the chosen type; choices owned by the modules' registries


@pytest.mark.parametrize("overrides,keys,type_", [
    (["model.encoder.cell=gru"], "model.encoder.cell", "model.encoder.type=transformer"),
    (["model.encoder.type=rnn", "model.encoder.heads=8"], "model.encoder.heads", "model.encoder.type=rnn"),
    (["model.decoder.type=rnn", "model.decoder.positions=learned", "model.decoder.ffn=64"],
     "model.decoder.positions, model.decoder.ffn", "model.decoder.type=rnn"),
    (["model.decoder.attention=dot"], "model.decoder.attention", "model.decoder.type=transformer"),
])
def test_key_for_another_type_is_an_error(overrides, keys, type_):
    with pytest.raises(ConfigError, match=f"{keys} do(es)? not apply to {type_}"):
        load_config(None, overrides)


def test_inapplicable_key_in_yaml_names_file_key_and_type(tmp_path):
    p = write(tmp_path, "model:\n  encoder:\n    type: transformer\n    cell: gru\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "model.encoder.cell" in msg and "model.encoder.type=transformer" in msg
    assert "read by model.encoder.type=rnn" in msg and "remove it" in msg


def test_applicable_keys_follow_the_builders():
    from seqed.config import applicable_keys

    assert set(applicable_keys("encoder", "rnn")) == {"type", "embed_dim", "hidden", "layers", "cell",
                                                       "bidirectional", "dropout", "reverse_source"}
    assert "heads" in applicable_keys("decoder", "transformer")
    assert "attention" in applicable_keys("decoder", "rnn") and "positions" not in applicable_keys("decoder", "rnn")


def test_stored_full_config_is_not_checked_for_applicability():
    """A checkpoint stores every key (to_dict), including the other type's defaults."""
    cfg = load_config(None, ["model.encoder.type=rnn", "model.decoder.type=rnn"])
    data = to_dict(cfg)
    assert "heads" in data["model"]["encoder"]
    assert config_from_dict(data) == cfg


def test_types_come_from_the_registries(monkeypatch):
    from seqed.encoders import ENCODERS, build_rnn

    with pytest.raises(ConfigError, match="model.encoder.type must be one of rnn, transformer; got 'cnn'"):
        load_config(None, ["model.encoder.type=cnn"])

    def build_cnn(embedding, max_positions, /, *, hidden, layers, kernel_width=3):
        return build_rnn(embedding, max_positions, hidden=hidden, layers=layers, cell="gru", bidirectional=False,
                         dropout=0.0, reverse_source=False)

    monkeypatch.setitem(ENCODERS, "cnn", build_cnn)
    cfg = load_config(None, ["model.encoder.type=cnn", "model.encoder.hidden=256", "model.encoder.layers=2"])
    assert cfg.model.encoder.type == "cnn"
    with pytest.raises(ConfigError, match="model.encoder.cell does not apply to model.encoder.type=cnn"):
        load_config(None, ["model.encoder.type=cnn", "model.encoder.cell=gru"])


def test_choices_come_from_the_registries(monkeypatch):
    from torch import nn

    from seqed.layers import CELLS

    rnn = ["model.encoder.type=rnn", "model.decoder.type=rnn"]
    with pytest.raises(ConfigError, match="model.encoder.cell must be one of lstm, gru; got 'rnn'"):
        load_config(None, [*rnn, "model.encoder.cell=rnn"])
    with pytest.raises(ConfigError, match="model.decoder.attention must be one of bahdanau, dot, general, none"):
        load_config(None, [*rnn, "model.decoder.attention=luong"])
    monkeypatch.setitem(CELLS, "rnn", nn.RNN)
    assert load_config(None, [*rnn, "model.encoder.cell=rnn", "model.decoder.cell=rnn"]).model.encoder.cell == "rnn"


@pytest.mark.parametrize("key,registry", [
    ("model.encoder.positions", "seqed.embeddings.POSITIONS"),
    ("model.bottleneck", "seqed.bottleneck.BOTTLENECKS"),
    ("train.precision", "seqed.precision.CHOICES"),
    ("train.optimizer", "seqed.optim.OPTIMIZERS"),
    ("tokenizer.type", "seqed.tokenizer.MODEL_TYPES"),
])
def test_error_lists_the_owning_registry(key, registry):
    import importlib

    module, name = registry.rsplit(".", 1)
    choices = ", ".join(getattr(importlib.import_module(module), name))
    with pytest.raises(ConfigError, match=f"{key} must be one of {choices}; got 'nope'"):
        load_config(None, [f"{key}=nope"])


def test_build_model_dispatches_through_the_registries(monkeypatch):
    import seqed.model
    from seqed.decoders import DECODERS
    from seqed.encoders import ENCODERS

    assert seqed.model.ENCODERS is ENCODERS and seqed.model.DECODERS is DECODERS
    calls = []

    def spy(registry, name):
        real = registry[name]

        def builder(*context, **keys):
            calls.append((name, sorted(keys)))
            return real(*context, **keys)
        builder.__signature__ = __import__("inspect").signature(real)
        monkeypatch.setitem(registry, name, builder)

    spy(ENCODERS, "rnn")
    spy(DECODERS, "transformer")
    cfg = load_config(None, ["model.encoder.type=rnn", "model.encoder.hidden=16", "model.encoder.bidirectional=false",
                             "model.decoder.hidden=16", "model.decoder.heads=2", "model.decoder.ffn=32"])
    model = seqed.model.build_model(cfg, 30, 30)
    assert type(model.encoder).__name__ == "RNNEncoder" and type(model.decoder).__name__ == "TransformerDecoder"
    assert calls == [("rnn", ["bidirectional", "cell", "dropout", "hidden", "layers", "reverse_source"]),
                     ("transformer", ["attention_dropout", "dropout", "ffn", "heads", "hidden", "layers",
                                      "positions"])]


def test_a_runs_own_config_yaml_loads_again(tmp_path):
    """config.yaml holds every key (inapplicable ones at their defaults): `seqed train run/config.yaml` works."""
    import yaml

    from seqed.config import Config, load_config, to_dict

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(Config()), sort_keys=False))
    assert load_config(path).model.encoder.type == "transformer"
