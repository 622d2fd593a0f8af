# nlme's scaled residuals (residuals(fit, type = "response" / "pearson" / "normalized"), level = Subject)
# of Orthodont fits with residual structures (tests/test_residual_scaled.py). Run from tests/reference:
#   Rscript make_scaled_residuals_reference.R
# Writes orthodont_scaled_residuals.json: per case, the residuals in the data's row order; weighted_lme4 is
# lme4's fit with prior weights (residuals(type = "pearson", scaled = TRUE)).
suppressMessages({library(nlme); library(jsonlite)})
orth <- read.csv(gzfile("../../hlm_jax/datasets/data/orthodont.csv.gz"), stringsAsFactors = TRUE)
orth$Sex <- factor(orth$Sex, levels = c("Female", "Male"))  # levels as hlm_jax codes them (sorted)
fits <- list(
  ar1 = lme(distance ~ age * Sex, random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject), data = orth),
  varident = lme(distance ~ age * Sex, random = ~1 | Subject, weights = varIdent(form = ~1 | Sex), data = orth),
  ar1_varident = lme(distance ~ age * Sex, random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject),
                     weights = varIdent(form = ~1 | Sex), data = orth),
  cs = lme(distance ~ age * Sex, random = ~0 + age | Subject, correlation = corCompSymm(form = ~1 | Subject),
           data = orth),
  varpower = lme(distance ~ age * Sex, random = ~1 | Subject, weights = varPower(form = ~age), data = orth),
  plain = lme(distance ~ age * Sex, random = ~1 | Subject, data = orth)
)
# residuals() come in the data's row order, named by group
by_row <- function(r) unname(r)
out <- lapply(fits, function(m) list(
  logLik = as.numeric(logLik(m)),
  response = by_row(residuals(m, type = "response")),
  pearson = by_row(residuals(m, type = "pearson")),
  normalized = by_row(residuals(m, type = "normalized"))))
# prior weights (lme4): pearson residuals scaled by σ/√w_i
suppressMessages(library(lme4))
orth$w <- 1 + (orth$age - 8) / 6
wfit <- lmer(distance ~ age * Sex + (1 | Subject), data = orth, weights = w)
out$weighted_lme4 <- list(logLik = as.numeric(logLik(wfit)), response = unname(residuals(wfit, type = "response")),
                          pearson = unname(residuals(wfit, type = "pearson", scaled = TRUE)))
out$engine <- paste("nlme", packageVersion("nlme"), "lme4", packageVersion("lme4"))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "orthodont_scaled_residuals.json")
