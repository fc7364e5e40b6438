"""jaxlab.tasks — trainer adapters for non-generative tasks (language modelling, classification, regression, fine-tuning)."""

from jaxlab.tasks.classification import Classifier, SequenceClassifier
from jaxlab.tasks.finetune import FineTune
from jaxlab.tasks.language_model import LanguageModel
from jaxlab.tasks.regression import WeightedRegression

__all__ = ["Classifier", "FineTune", "LanguageModel", "SequenceClassifier", "WeightedRegression"]
