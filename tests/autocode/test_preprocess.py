from autocode.preprocess import (
    PreprocessConfig,
    Preprocessor,
    categorical_tokens,
)


def test_french_normalisation():
    clean = Preprocessor()
    assert clean.text("BOULANGER-PÂTISSIER à Paris 75011 !") == "boulang patissi paris"
    assert clean.text("Cœur d'œuvre") == "coeur oeuvr"
    assert clean(["", None, float("nan")]) == ["", "", ""]


def test_each_step_can_be_switched_off():
    raw = Preprocessor(
        PreprocessConfig(
            lowercase_and_strip_accents=False,
            remove_punctuation=False,
            remove_digits=False,
            remove_stop_words=False,
            stem=False,
        )
    )
    assert raw.text("Café, 2 rue de l'Été") == "Café, 2 rue de l'Été"
    no_stem = Preprocessor(PreprocessConfig(stem=False))
    assert no_stem.text("Les boulangeries de Paris") == "boulangeries paris"
    digits = Preprocessor(PreprocessConfig(remove_digits=False))
    assert digits.text("Vente 50CC") == "vent 50cc"


def test_config_round_trip_and_pickling():
    import pickle

    config = PreprocessConfig(stem=False, stop_words=frozenset({"le"}))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    clean = pickle.loads(pickle.dumps(Preprocessor(config)))  # noqa: S301
    assert clean.text("le pain") == "pain"


def test_categorical_variables_become_tokens():
    tokens = categorical_tokens(
        {"type_": ["M", None], "nature": [14.0, float("nan")], "event": ["01P", ""]}
    )
    assert tokens == ["TYPE_M NATURE_14 EVENT_01P", "TYPE_NaN NATURE_NaN EVENT_NaN"]


def test_abbreviations_and_legal_forms():
    clean = Preprocessor()
    assert clean.text("SARL Dupont : fab. de pains, vte au dét.") == clean.text(
        "Dupont fabrication de pains vente au détail"
    )
    assert clean.text("Ets MARTIN") == clean.text("établissements Martin")
    assert clean.text("EURL BTP") == clean.text("bâtiment travaux publics")
    plain = Preprocessor(PreprocessConfig(synonyms={}))
    assert plain.text("SARL fab") == "sarl fab"
    custom = Preprocessor(PreprocessConfig(synonyms={"vtc": "voiture transport chauffeur"}))
    assert custom.text("VTC") == clean.text("voiture transport chauffeur")
    config = PreprocessConfig(synonyms={"ets": "etablissements"})
    assert PreprocessConfig.from_dict(config.to_dict()) == config
