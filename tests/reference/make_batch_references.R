# References for tests/test_batch.py (lme4 1.1-31, pbkrtest). Run from the repository root:
#   Rscript tests/reference/make_batch_references.R
# Writes tests/reference/batch_lme4.json.
suppressMessages({library(lme4); library(jsonlite)})

out <- list(id = "batch_lme4", engine = paste("lme4", packageVersion("lme4")))

# Parametric bootstrap with more replicates than sleepstudy_bootstrap.json (n = 1000), so the lower
# tail of theta_3 (which has a point mass of about 2% at 0: singular fits) is estimated more stably.
m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
set.seed(42)
t0 <- proc.time()[["elapsed"]]
b <- suppressMessages(suppressWarnings(
  bootMer(m, function(x) c(fixef(x), sigma = sigma(x), getME(x, "theta")), nsim = 5000)))
elapsed <- proc.time()[["elapsed"]] - t0
t <- b$t
out$bootstrap <- list(formula = "Reaction ~ Days + (Days | Subject)", data = "sleepstudy", REML = TRUE,
                      nsim = nrow(t), seed = 42, names = colnames(t),
                      sd = unname(apply(t, 2, sd)),
                      q025 = unname(apply(t, 2, quantile, 0.025)),
                      q975 = unname(apply(t, 2, quantile, 0.975)),
                      theta3_zero_fraction = mean(t[, 6] < 1e-4),
                      seconds = elapsed)

# lmList: per-subject coefficients and standard errors, pooled (lmList's default) and per group
l <- lmList(Reaction ~ Days | Subject, sleepstudy)
se <- function(pool) {
  co <- coef(summary(l, pool = pool))  # levels x stats x terms
  unname(cbind(co[, "Std. Error", "(Intercept)"], co[, "Std. Error", "Days"]))
}
out$lmlist <- list(formula = "Reaction ~ Days | Subject", levels = rownames(coef(l)), columns = colnames(coef(l)),
                   coef = unname(as.matrix(coef(l))), se_pooled = se(TRUE), se = se(FALSE),
                   pooled_sd = summary(l)$RSE,
                   sigma = unname(sapply(l, sigma)), df_resid = unname(sapply(l, df.residual)))

# lmList with a group too small to fit: drop all but one row of subject 308
d2 <- sleepstudy[!(sleepstudy$Subject == "308" & sleepstudy$Days > 0), ]
l2 <- lmList(Reaction ~ Days | Subject, d2)
out$lmlist_small_group <- list(levels = rownames(coef(l2)), coef = unname(as.matrix(coef(l2))))

writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"), "tests/reference/batch_lme4.json")
