# nlme references for residual structures (tests/test_residual*.py). Run from tests/reference:
#   Rscript make_residual_references.R
# Writes one JSON per case and car1_panel.csv (a simulated panel with unequally spaced times).
suppressMessages({library(nlme); library(jsonlite)})
orth <- read.csv(gzfile("../../hlm_jax/datasets/data/orthodont.csv.gz"), stringsAsFactors = TRUE)
sleep <- read.csv(gzfile("../../hlm_jax/datasets/data/sleepstudy.csv.gz"), stringsAsFactors = TRUE)

set.seed(16)
panel <- do.call(rbind, lapply(1:40, function(i) {
  n <- sample(4:8, 1); t <- sort(sample(0:1000, n)) / 100
  R <- 0.5^abs(outer(t, t, "-")); e <- drop(t(chol(R)) %*% rnorm(n))
  data.frame(id = sprintf("s%02d", i), time = t, x = rnorm(n), y = 2 + 0.5 * t + rnorm(1, sd = 1.5) + e)
}))
panel$y <- round(panel$y, 6); panel$x <- round(panel$x, 6)
write.csv(panel, "car1_panel.csv", row.names = FALSE)
panel <- read.csv("car1_panel.csv", stringsAsFactors = TRUE)

# delta-method SE of a function of nlme's unconstrained parameters (numerical derivative of the map)
delta_se <- function(f, eta, var) { h <- 1e-6; d <- (f(eta + h) - f(eta - h)) / (2 * h); abs(d) * sqrt(var) }

case <- function(id, m, data, call, extra = list()) {
  s <- summary(m)
  D <- pdMatrix(m$modelStruct$reStruct)[[1]] * m$sigma^2
  sds <- sqrt(diag(D)); names(sds) <- colnames(D)
  ms <- m$modelStruct
  cs <- if (is.null(ms$corStruct)) NULL else as.list(coef(ms$corStruct, unconstrained = FALSE))
  vs <- if (is.null(ms$varStruct)) NULL else as.list(coef(ms$varStruct, unconstrained = FALSE))
  if (inherits(ms$varStruct, "varIdent")) { vs <- c(list(1), vs); names(vs)[1] <- attr(ms$varStruct, "groupNames")[1] }
  out <- list(id = id, engine = paste("nlme", packageVersion("nlme")), kind = "lme", data = data, call = call,
              REML = m$method == "REML", fixef = as.list(fixef(m)), se = as.list(sqrt(diag(vcov(m)))),
              sigma = m$sigma, logLik = as.numeric(logLik(m)), AIC = AIC(m), BIC = BIC(m),
              re_sd = as.list(sds), corStruct = cs, varStruct = vs)
  A <- m$apVar
  if (is.matrix(A)) {
    eta <- attr(A, "Pars"); se <- list()
    se$sigma <- delta_se(exp, eta[["lSigma"]], A["lSigma", "lSigma"])
    for (k in seq_along(sds)) {
      nm <- names(eta)[k]; se[[paste0("sd_", names(sds)[k])]] <- delta_se(exp, eta[[nm]], A[nm, nm])
    }
    for (nm in setdiff(names(eta), c(names(eta)[seq_along(sds)], "lSigma"))) {
      struct <- if (startsWith(nm, "corStruct")) ms$corStruct else ms$varStruct
      f <- function(v) { s2 <- struct; coef(s2) <- v; coef(s2, unconstrained = FALSE)[[1]] }
      se[[names(coef(struct, unconstrained = FALSE))[1]]] <- delta_se(f, eta[[nm]], A[nm, nm])
    }
    out$se_var <- se
  }
  write(toJSON(c(out, extra), auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), paste0(id, ".json"))
}

orth_call <- function(...) lme(distance ~ age * Sex, data = orth, ...)
case("orthodont_ar1_ml", orth_call(random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject), method = "ML"),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject), method = 'ML')")
case("orthodont_cs_reml", orth_call(random = ~age - 1 | Subject, correlation = corCompSymm(form = ~1 | Subject)),
     "orthodont", "lme(distance ~ age * Sex, random = ~age - 1|Subject, correlation = corCompSymm(form = ~1|Subject))")
case("orthodont_varpower_reml", orth_call(random = ~1 | Subject, weights = varPower(form = ~age)),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, weights = varPower(form = ~age))")
case("orthodont_varexp_reml", orth_call(random = ~1 | Subject, weights = varExp(form = ~age)),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, weights = varExp(form = ~age))")
case("sleepstudy_ar1_reml", lme(Reaction ~ Days, random = ~1 | Subject, correlation = corAR1(), data = sleep),
     "sleepstudy", "lme(Reaction ~ Days, random = ~1|Subject, correlation = corAR1())")
case("panel_car1_reml", lme(y ~ time + x, random = ~1 | id, correlation = corCAR1(form = ~time | id), data = panel),
     "car1_panel.csv", "lme(y ~ time + x, random = ~1|id, correlation = corCAR1(form = ~time|id))")
case("orthodont_ar1_varident_reml", orth_call(random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject),
                                               weights = varIdent(form = ~1 | Sex)),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject), weights = varIdent(form = ~1|Sex))")
# the shared references, with the variance-parameter SEs added
case("orthodont_ar1_reml_se", orth_call(random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject)),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject))")
case("orthodont_varident_reml_se", orth_call(random = ~1 | Subject, weights = varIdent(form = ~1 | Sex)),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, weights = varIdent(form = ~1|Sex))")
# variance a power of the fitted values (nlme's default form = ~fitted(.)): nlme updates the fitted values
# between optimisations until they settle
case("orthodont_varpower_fitted_reml", orth_call(random = ~1 | Subject, weights = varPower()),
     "orthodont", "lme(distance ~ age * Sex, random = ~1|Subject, weights = varPower())")
