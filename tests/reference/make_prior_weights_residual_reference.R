# nlme reference for prior weights together with a residual correlation (tests/test_residual_scaled.py):
# prior weights w give row i the residual variance σ²/w_i, nlme's varFixed(~ 1/w). Run from tests/reference:
#   Rscript make_prior_weights_residual_reference.R
suppressMessages({library(nlme); library(jsonlite)})
orth <- read.csv(gzfile("../../hlm_jax/datasets/data/orthodont.csv.gz"), stringsAsFactors = TRUE)
orth$w <- 1 + (orth$age - 8) / 6
orth$invw <- 1 / orth$w
m <- lme(distance ~ age * Sex, random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject),
         weights = varFixed(~invw), data = orth)
D <- pdMatrix(m$modelStruct$reStruct)[[1]] * m$sigma^2
out <- list(id = "orthodont_ar1_priorweights_reml", engine = paste("nlme", packageVersion("nlme")),
            call = "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject), weights = varFixed(~1/w)), w = 1 + (age - 8)/6",
            REML = TRUE, fixef = as.list(fixef(m)), se = as.list(sqrt(diag(vcov(m)))), sigma = m$sigma,
            logLik = as.numeric(logLik(m)), AIC = AIC(m), re_sd = list(`(Intercept)` = sqrt(D[1, 1])),
            corStruct = as.list(coef(m$modelStruct$corStruct, unconstrained = FALSE)), varStruct = NULL,
            response = unname(residuals(m, type = "response")), pearson = unname(residuals(m, type = "pearson")),
            normalized = unname(residuals(m, type = "normalized")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"), "orthodont_ar1_priorweights_reml.json")
