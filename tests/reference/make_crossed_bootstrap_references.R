# References for the crossed and nested bootstrap tests (tests/test_batch_crossed.py): lme4's bootMer
# (parametric, use.u = FALSE, REML as fitted) with nsim = 2000. Run from the repository root:
#   Rscript tests/reference/make_crossed_bootstrap_references.R
# Writes tests/reference/crossed_bootstrap_lme4.json.
suppressMessages({library(lme4); library(jsonlite)})

boot_summary <- function(formula, data, name, seed) {
  m <- lmer(formula, data)
  set.seed(seed)
  t0 <- proc.time()[["elapsed"]]
  b <- suppressMessages(suppressWarnings(
    bootMer(m, function(x) c(fixef(x), sigma = sigma(x), getME(x, "theta")), nsim = 2000)))
  elapsed <- proc.time()[["elapsed"]] - t0
  t <- b$t
  list(formula = deparse(formula), data = name, REML = TRUE, nsim = nrow(t), seed = seed,
       names = colnames(t), estimate = unname(b$t0),
       sd = unname(apply(t, 2, sd)),
       q025 = unname(apply(t, 2, quantile, 0.025)),
       q975 = unname(apply(t, 2, quantile, 0.975)),
       zero_fraction = unname(apply(t, 2, function(v) mean(abs(v) < 1e-4))),
       seconds = elapsed)
}

out <- list(id = "crossed_bootstrap_lme4", engine = paste("lme4", packageVersion("lme4")))
out$penicillin <- boot_summary(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, "penicillin", 101)
out$pastes <- boot_summary(strength ~ 1 + (1 | batch/cask), Pastes, "pastes", 202)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/crossed_bootstrap_lme4.json")
