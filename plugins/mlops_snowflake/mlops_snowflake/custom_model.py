"""The model as the registry stores it: a snowflake-ml ``CustomModel`` carrying the feature contract.

``mv.run`` in the warehouse calls :meth:`ContractModel.predict` with the RAW input columns; the
contract (``contract.json``) encodes them exactly as training did, and the booster (``model.ubj``)
scores them. The output is ``PREDICTED_SCORE`` (probability of ``contract.classes[1]``) and
``PREDICTED_RESPONSE`` (the class, by the model's threshold), the same as local scoring.

This module is shipped inside the registered model: snowflake-ml pickles it by value, and the core
package ``mlops_framework`` travels as a code path. It must therefore import nothing from
``mlops_snowflake`` and nothing heavy at module level besides snowflake-ml's own ``custom_model``.
"""

from pathlib import Path

import pandas as pd
from snowflake.ml.model import custom_model

SCORE_COLUMN = "PREDICTED_SCORE"
CLASS_COLUMN = "PREDICTED_RESPONSE"


class ContractModel(custom_model.CustomModel):
    """A ``TrainedModel`` (estimator + feature contract + threshold) behind snowflake-ml's interface."""

    def __init__(self, context: custom_model.ModelContext) -> None:
        super().__init__(context)
        from mlops_framework.model import TrainedModel

        # Every artifact is copied into one directory, so the saved TrainedModel loads from there.
        self.trained = TrainedModel.load(Path(context["contract"]).parent)

    @custom_model.inference_api
    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        trained = self.trained
        scores = trained.predict_scores(trained.contract.encode_frame(X))
        return pd.DataFrame(
            {SCORE_COLUMN: pd.Series(scores, dtype="float64").to_numpy(),
             CLASS_COLUMN: trained.predict_classes(scores)},
        )


def build(trained_model, directory) -> ContractModel:
    """Save ``trained_model`` into ``directory`` and wrap it; the files must outlive the packaging."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained_model.save(directory)
    estimator = next(p for p in sorted(directory.iterdir()) if p.name.startswith("model.") and p.is_file())
    files = {"model": estimator, "model_info": directory / "model_info.json", "contract": directory / "contract.json"}
    return ContractModel(custom_model.ModelContext(artifacts={name: str(path) for name, path in files.items()}))
