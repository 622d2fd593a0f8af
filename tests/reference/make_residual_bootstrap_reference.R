# Refits the 5 simulated responses of orthodont_ar1_boot_responses.csv (made by
# make_residual_bootstrap_reference.py) with nlme: lme(..., correlation = corAR1()), REML.
suppressMessages({library(nlme); library(jsonlite)})
orth <- read.csv(gzfile("../../hlm_jax/datasets/data/orthodont.csv.gz"), stringsAsFactors = TRUE)
Y <- read.csv("orthodont_ar1_boot_responses.csv")
fits <- lapply(names(Y), function(col) {
  d <- orth; d$distance <- Y[[col]]
  m <- lme(distance ~ age * Sex, random = ~1 | Subject, correlation = corAR1(form = ~1 | Subject), data = d,
           control = lmeControl(tolerance = 1e-10, msTol = 1e-10))
  D <- pdMatrix(m$modelStruct$reStruct)[[1]] * m$sigma^2
  list(fixef = as.list(fixef(m)), sigma = m$sigma, re_sd = sqrt(D[1, 1]),
       Phi = coef(m$modelStruct$corStruct, unconstrained = FALSE)[["Phi"]], logLik = as.numeric(logLik(m)))
})
names(fits) <- names(Y)
write(toJSON(list(id = "orthodont_ar1_boot_refits", engine = paste("nlme", packageVersion("nlme")),
                  call = "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject))",
                  REML = TRUE, fits = fits), auto_unbox = TRUE, digits = NA, pretty = TRUE),
      "orthodont_ar1_boot_refits.json")
