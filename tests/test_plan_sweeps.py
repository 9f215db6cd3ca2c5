"""``mlops plan -m``: a sweep's trials (a grid) or its study (an Optuna search), worked out as ``mlops run -m``
would launch them, then one trial's plan; in a subprocess as a user runs it, running and writing nothing."""

import itertools
import re

# a launcher without a plan: "trial 0: OVERRIDES"; a launcher's own plan: "trial 0: WHERE..., overrides: OVERRIDES"
TRIAL = re.compile(r"^  trial (\d+): (?:.*overrides: )?(.*)$", re.M)


def listed_trials(out):
    """``[(number, [override, ...]), ...]`` from the trial lines of a grid's plan."""
    return [(int(number), overrides.split()) for number, overrides in TRIAL.findall(out)]


def test_a_grid_lists_every_trial_then_plans_the_first_and_writes_nothing(mlops, home):
    out = mlops("plan", "-m", "model.params.max_depth=3,6", "model.params.learning_rate=0.1,0.3", check=True).stdout
    expected = [[f"model.params.max_depth={depth}", f"model.params.learning_rate={rate}"]
                for depth, rate in itertools.product((3, 6), (0.1, 0.3))]
    assert listed_trials(out) == list(enumerate(expected))
    header = out.splitlines()[0]
    assert re.match(r"sweep: 4 trials, sweeper BasicSweeper \(hydra/sweeper=basic\), launcher \w+ "
                    r"\(hydra/launcher=", header)
    assert f"sweep dir {home}/multiruns/" in header
    # the first trial's own plan: its stages, with its values
    assert "plan of trial 0 (model.params.max_depth=3 model.params.learning_rate=0.1): backend local" in out
    assert re.search(r"^\s+5\. train: fit xgboost\.XGBClassifier\(.*max_depth=3, learning_rate=0\.1", out, re.M)
    assert not home.exists()  # no sweep directory, no registry, no warehouse

    # a launcher without a plan of its own (Hydra's basic one): each trial's number and overrides
    out = mlops("plan", "-m", "hydra/launcher=basic", "model.params.max_depth=3,6", check=True).stdout
    assert out.splitlines()[:3] == [
        f"sweep: 2 trials, sweeper BasicSweeper (hydra/sweeper=basic), launcher BasicLauncher (hydra/launcher=basic), "
        f"sweep dir {home}/multiruns/{out.splitlines()[0].rsplit('/', 1)[-1]}",
        "  trial 0: model.params.max_depth=3", "  trial 1: model.params.max_depth=6"]
    assert not home.exists()


def test_a_grid_from_hparams_search_with_the_command_line_over_it(mlops, home):
    out = mlops("plan", "-m", "hparams_search=mortgage_grid", check=True).stdout
    trials = listed_trials(out)
    assert [number for number, _ in trials] == list(range(6))
    grid = {(o[0], o[1]) for _, o in trials}
    assert grid == {(f"model.params.max_depth={d}", f"model.params.learning_rate={r}")
                    for d in (3, 6, 9) for r in (0.05, 0.3)}
    assert all(o[2:] == ["hparams_search=mortgage_grid"] for _, o in trials)
    assert re.search(r"launcher \w+ \(hydra/launcher=\w+, n_jobs=-1\)", out.splitlines()[0])  # one per core
    assert "7 stages" in out and "score:" not in out  # the search's pipeline=train

    # a key on the command line replaces the config's values for that key, as BasicSweeper.sweep merges them
    out = mlops("plan", "--multirun", "hparams_search=mortgage_grid", "model.params.max_depth=4",
                "hydra.launcher.n_jobs=2", check=True).stdout
    trials = listed_trials(out)
    assert [o[:2] for _, o in trials] == [["model.params.max_depth=4", "model.params.learning_rate=0.05"],
                                          ["model.params.max_depth=4", "model.params.learning_rate=0.3"]]
    assert re.search(r"^sweep: 2 trials, .*, n_jobs=2\)", out, re.M)
    assert not home.exists()


def test_an_optuna_search_prints_its_study_and_space(mlops, home):
    out = mlops("plan", "-m", "hparams_search=mortgage_optuna", "hydra.sweeper.n_trials=7",
                "model.params.max_depth=range(4,6)", check=True).stdout
    header = out.splitlines()[0]
    assert header.startswith("sweep: Optuna study 'mortgage_xgb', 7 trials, "), header
    assert "sweeper MlopsOptunaSweeper (hydra/sweeper=mlops_optuna)" in header
    assert "objective: maximize validation_f1" in out and "sampler:   tpe, seed 42" in out
    assert re.search(rf"storage:   {re.escape(str(home))}/multiruns/[^/\s]+/optuna\.journal", out)
    space = dict(re.findall(r"^    (\S+): (.*)$", out, re.M))
    assert space == {
        "model.params.max_depth": "int in [4, 5]",  # the command line's range replaces the config's
        "model.params.learning_rate": "float in [0.01, 0.3], log scale",
        "model.params.n_estimators": "int in [50, 400], step 50",
        "model.params.min_child_weight": "float in [1.0, 20.0], log scale",
        "model.params.subsample": "float in [0.6, 1.0]",
        "model.params.colsample_bytree": "float in [0.6, 1.0]",
    }
    assert not TRIAL.search(out)  # trials are not known in advance
    assert re.search(r"^plan of a trial, each searched key at its first value \(.*model\.params\.max_depth=4 ",
                     out, re.M)
    assert re.search(r"train: fit xgboost\.XGBClassifier\(n_estimators=50, max_depth=4, learning_rate=0\.01", out)
    assert not home.exists()  # no journal, no sweep.json


def test_the_first_trial_is_checked_before_anything_is_printed(mlops, home):
    result = mlops("plan", "-m", "model.params.max_depth=3,6", "data.weeks=???")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("mlops: error: missing required config values: data.weeks "
                                     "(set them, e.g. data.weeks=...)")


def test_bad_overrides_and_settings_fail_with_one_message(mlops, home):
    cases = {
        ("model.params.max_dept=3,6",): "Could not override 'model.params.max_dept'",
        ("model.params.max_depth=interval(1,3)",): "BasicSweeper does not support sweep type : INTERVAL_SWEEP",
        ("hydra.launcher.n_jobs=1,2",): "Sweeping over Hydra's configuration is not supported",
        ("hydra/sweeper=mlops_optuna",): "the search space is empty",
        ("hparams_search=mortgage_optuna", "hydra.sweeper.direction=up"): "must be maximize or minimize, not 'up'",
        ("model=xgboost,nope",): "Could not find 'model/nope'",
    }
    for overrides, message in cases.items():
        result = mlops("plan", "-m", *overrides)
        assert result.returncode == 2, (overrides, result.stdout, result.stderr)
        assert result.stderr.startswith("mlops: error: ") and result.stderr.count("mlops: error:") == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr, (overrides, result.stderr)
        assert result.stdout == "", (overrides, result.stdout)
    assert not home.exists()
