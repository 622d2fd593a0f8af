# References for tests/test_glmm*.py (lme4 1.1-31). Run from the repository root:
#   Rscript tests/reference/make_glmm_references.R
# Writes tests/reference/glmm_lme4.json, tests/reference/glmm_poisson_data.csv and
# hlm_jax/datasets/data/verbagg.csv.gz (lme4's VerbAgg, for the crossed benchmark).
suppressMessages({library(lme4); library(jsonlite)})

cbpp <- read.csv("hlm_jax/datasets/data/cbpp.csv.gz", colClasses = c(herd = "factor", period = "factor"))
cbpp$herd <- factor(cbpp$herd, levels = as.character(sort(as.integer(levels(cbpp$herd)))))

fit_info <- function(m, formula, data, extra = list()) {
  vc <- as.data.frame(VarCorr(m))
  re <- lapply(ranef(m, condVar = TRUE), function(r) {
    v <- attr(r, "postVar")
    list(levels = rownames(r), mode = unname(r[[1]]), condsd = unname(sqrt(v[1, 1, ])))
  })
  c(list(formula = formula, data = data, fixef = as.list(fixef(m)),
         se = as.list(sqrt(diag(as.matrix(vcov(m))))), vcov = unname(as.matrix(vcov(m))),
         theta = unname(getME(m, "theta")), logLik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
         AIC = AIC(m), BIC = BIC(m), deviance = deviance(m), ranef = re,
         varcorr = list(grp = vc$grp, vcov = vc$vcov, sdcor = vc$sdcor)), extra)
}
timing <- function(expr_fun) {
  expr_fun()
  t <- replicate(5, system.time(expr_fun())[["elapsed"]])
  list(min = min(t), median = median(t))
}
out <- list(id = "glmm_lme4", engine = paste("lme4", packageVersion("lme4")))

f_cbpp <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
m <- glmer(as.formula(f_cbpp), cbpp, family = binomial)
out$cbpp <- fit_info(m, f_cbpp, "cbpp", list(
  fitted_first5 = unname(fitted(m)[1:5]),
  predict_link_first5 = unname(predict(m, type = "link")[1:5]),
  predict_population_first5 = unname(predict(m, re.form = NA, type = "response")[1:5]),
  resid_deviance_first5 = unname(residuals(m, type = "deviance")[1:5]),
  resid_pearson_first5 = unname(residuals(m, type = "pearson")[1:5]),
  resid_response_first5 = unname(residuals(m, type = "response")[1:5]),
  ztest = list(z = unname(coef(summary(m))[, "z value"]), p = unname(coef(summary(m))[, "Pr(>|z|)"])),
  timing_s = timing(function() glmer(as.formula(f_cbpp), cbpp, family = binomial))))

m0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, family = binomial)
a <- anova(m0, m)
out$cbpp_anova <- list(Chisq = a$Chisq[2], Df = a$Df[2], p = a[["Pr(>Chisq)"]][2], logLik = a$logLik,
                       AIC = a$AIC, BIC = a$BIC)

m9 <- glmer(as.formula(f_cbpp), cbpp, family = binomial, nAGQ = 9)
out$cbpp_agq9 <- fit_info(m9, f_cbpp, "cbpp", list(nAGQ = 9))

f_prop <- "incidence / size ~ period + (1 | herd)"
mp <- glmer(incidence / size ~ period + (1 | herd), cbpp, family = binomial, weights = size)
out$cbpp_proportion <- fit_info(mp, f_prop, "cbpp", list(weights = "size"))

mpr <- glmer(as.formula(f_cbpp), cbpp, family = binomial(link = "probit"))
out$cbpp_probit <- fit_info(mpr, f_cbpp, "cbpp", list(link = "probit"))

mcl <- glmer(as.formula(f_cbpp), cbpp, family = binomial(link = "cloglog"))
out$cbpp_cloglog <- fit_info(mcl, f_cbpp, "cbpp", list(link = "cloglog"))

# Poisson counts with two crossed factors and an exposure offset, simulated here and kept as CSV
set.seed(15)
d <- expand.grid(subj = factor(1:40), item = factor(1:12), rep = 1:2)
d$x <- round(rnorm(nrow(d)), 3)
d$t <- round(runif(nrow(d), 0.5, 3), 3)
u_s <- rnorm(40, sd = 0.5); u_i <- rnorm(12, sd = 0.3)
d$y <- rpois(nrow(d), d$t * exp(0.3 + 0.4 * d$x + u_s[d$subj] + u_i[d$item]))
write.csv(d[, c("subj", "item", "x", "t", "y")], "tests/reference/glmm_poisson_data.csv", row.names = FALSE)
f_pois <- "y ~ x + offset(log(t)) + (1 | subj) + (1 | item)"
mpo <- glmer(as.formula(f_pois), d, family = poisson)
out$poisson_crossed <- fit_info(mpo, f_pois, "glmm_poisson_data.csv")

# a nested Poisson model on the same counts: items within subjects
f_nest <- "y ~ x + offset(log(t)) + (1 | subj/item)"
mne <- glmer(as.formula(f_nest), d, family = poisson)
out$poisson_nested <- fit_info(mne, f_nest, "glmm_poisson_data.csv")

# lmer with prior weights and an offset
ss <- sleepstudy
ss$w <- 1 + (ss$Days %% 3)
ss$off <- 2 * ss$Days
f_w <- "Reaction ~ Days + offset(off) + (Days | Subject)"
mw <- lmer(as.formula(f_w), ss, weights = w)
out$lmer_weights_offset <- c(fit_info(mw, f_w, "sleepstudy"), list(weights = "1 + Days %% 3", offset = "2 * Days",
                             sigma = sigma(mw), REML = TRUE, REMLcrit = REMLcrit(mw)))
mw_ml <- lmer(as.formula(f_w), ss, weights = w, REML = FALSE)
out$lmer_weights_offset_ml <- c(fit_info(mw_ml, f_w, "sleepstudy"), list(sigma = sigma(mw_ml), REML = FALSE))

# VerbAgg: crossed binomial, persons x items (exported for the benchmark)
va <- VerbAgg
va_out <- data.frame(id = va$id, item = va$item, Anger = va$Anger, Gender = va$Gender, btype = va$btype,
                     situ = va$situ, mode = va$mode, r2 = as.integer(va$r2 == "Y"))
gz <- gzfile("hlm_jax/datasets/data/verbagg.csv.gz", "w"); write.csv(va_out, gz, row.names = FALSE); close(gz)
f_va <- "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
mva <- glmer(as.formula(f_va), va_out, family = binomial)
out$verbagg <- fit_info(mva, f_va, "verbagg", list(
  timing_s = timing(function() glmer(as.formula(f_va), va_out, family = binomial))))

# Parametric bootstrap of the cbpp fit
set.seed(42)
t0 <- proc.time()[["elapsed"]]
b <- suppressMessages(suppressWarnings(
  bootMer(m, function(x) c(fixef(x), getME(x, "theta")), nsim = 2000)))
elapsed <- proc.time()[["elapsed"]] - t0
t <- b$t
out$cbpp_bootstrap <- list(nsim = nrow(t), seed = 42, names = colnames(t),
                           sd = unname(apply(t, 2, sd)),
                           q025 = unname(apply(t, 2, quantile, 0.025)),
                           q975 = unname(apply(t, 2, quantile, 0.975)),
                           seconds = elapsed)

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/glmm_lme4.json")
