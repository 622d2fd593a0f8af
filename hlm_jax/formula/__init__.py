"""One safe parser for every formula of hlm_jax: lmer's fixed and random parts, lmlist's `y ~ x | g`,
fit_many, hlm's level equations and the command line.

Formula text is tokenized and parsed into a syntax tree (`parse`); only column names, numbers, the
formula operators, arithmetic inside function arguments and a fixed set of transforms are accepted,
and anything else raises `FormulaError` naming the token before any data is touched. The terms are
expanded as R does (`terms`), evaluated with numpy (`transforms`) and coded into a model matrix with
R's column names and contrasts (`matrix`). No formula text is ever passed to `eval` or to formulaic.
"""
from .frame import Columns, select
from .lme4 import ParsedFormula, RandomTerm, parse_formula, parse_lmlist, parse_terms
from .matrix import MatrixSpec, check_columns, check_finite, model_matrix, response_values
from .parse import TRANSFORMS, Call, FormulaError, Name, deparse
from .terms import Terms, expand, term_label
from .transforms import DesignError, factor_codes, used_codes, variables

__all__ = ["Columns", "select", "FormulaError", "DesignError", "ParsedFormula", "RandomTerm", "parse_formula", "parse_lmlist",
           "parse_terms", "MatrixSpec", "model_matrix", "check_columns", "check_finite", "response_values", "Terms", "expand",
           "term_label", "factor_codes", "used_codes", "variables", "deparse", "TRANSFORMS", "Name", "Call"]
