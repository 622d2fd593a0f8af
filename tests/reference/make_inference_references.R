# Extra references for tests/test_inference.py and tests/test_multilevel.py (issue 5).
# Run from the repository root:  Rscript tests/reference/make_inference_references.R
# Made with R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2, on the package's own CSV files
# (hlm_jax/datasets/data/*.csv.gz), so the data are exactly those the tests load.
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
rd <- function(name) read.csv(gzfile(file.path("hlm_jax/datasets/data", paste0(name, ".csv.gz"))))
out <- function(x, file) writeLines(toJSON(x, auto_unbox = TRUE, digits = NA, pretty = TRUE),
                                    file.path("tests/reference", file))

## London schools (mlmRev Exam): the seed's classic methods, and the mixed models -----------------
exam <- rd("exam")
exam$school <- factor(exam$school)
pooled <- summary(lm(normexam ~ standLRT, exam))$coef
means <- aggregate(cbind(normexam, standLRT) ~ school, exam, mean)
between <- summary(lm(normexam ~ standLRT, means))$coef
per <- lmList(normexam ~ standLRT | school, exam)
slopes <- coef(per)[, "standLRT"]
# Monette's Method 2: average of the per-school slopes, SE from the pooled within-school residual variance
fe_all <- lm(normexam ~ school / standLRT - 1, exam)
L <- as.numeric(grepl(":standLRT$", names(coef(fe_all)))) / nlevels(exam$school)
avg_se <- sqrt(drop(t(L) %*% vcov(fe_all) %*% L))
within <- summary(lm(normexam ~ standLRT + school, exam))$coef["standLRT", ]
mixed <- lmer(normexam ~ standLRT + (standLRT | school), exam)
exam$standLRT_mean <- ave(exam$standLRT, exam$school)
ctx <- lmer(normexam ~ standLRT + standLRT_mean + (standLRT | school), exam)
V <- vcov(ctx)
out(list(
  id = "exam_methods", data = "exam",
  note = "normexam on standLRT, 65 schools: each classic method's slope (see make_inference_references.R)",
  pooled = list(estimate = pooled["standLRT", 1], se = pooled["standLRT", 2]),
  between = list(estimate = between["standLRT", 1], se = between["standLRT", 2]),
  per_group = list(mean = mean(slopes), sd = sd(slopes), sem = sd(slopes) / sqrt(length(slopes)),
                   n = length(slopes), se_within = avg_se,
                   intercept_mean = mean(coef(per)[, 1]), intercept_sd = sd(coef(per)[, 1])),
  fixed_effects = list(estimate = within[[1]], se = within[[2]]),
  mixed = list(formula = "normexam ~ standLRT + (standLRT | school)",
               estimate = fixef(mixed)[["standLRT"]], se = sqrt(vcov(mixed)["standLRT", "standLRT"]),
               objective = REMLcrit(mixed)),
  contextual = list(formula = "normexam ~ standLRT + standLRT_mean + (standLRT | school)",
                    within = fixef(ctx)[["standLRT"]], within_se = sqrt(V["standLRT", "standLRT"]),
                    between = sum(fixef(ctx)[c("standLRT", "standLRT_mean")]),
                    between_se = sqrt(sum(V[c("standLRT", "standLRT_mean"), c("standLRT", "standLRT_mean")])),
                    objective = REMLcrit(ctx))
), "exam_methods.json")

## High School and Beyond: within vs between effect of ses (Hausman, contextual) ------------------
hsb <- rd("hsb")
hsb$school <- factor(hsb$school)
fe <- summary(lm(mathach ~ ses + school, hsb))$coef["ses", ]
re <- lmer(mathach ~ ses + (1 | school), hsb)
b_re <- fixef(re)[["ses"]]; v_re <- vcov(re)["ses", "ses"]
hsb$ses_mean <- ave(hsb$ses, hsb$school)
ctx <- lmer(mathach ~ ses + ses_mean + (1 | school), hsb)
st <- summary(ctx, ddf = "Satterthwaite")$coef
h <- (fe[[1]] - b_re)^2 / (fe[[2]]^2 - v_re)
out(list(
  id = "hsb_hausman", data = "hsb",
  note = "FE: lm(mathach ~ ses + school); RE: lmer(mathach ~ ses + (1|school)); contextual: + ses_mean (REML)",
  within = list(estimate = fe[[1]], se = fe[[2]]),
  random_effects = list(estimate = b_re, se = sqrt(v_re)),
  hausman = list(chisq = h, df = 1, p = pchisq(h, 1, lower.tail = FALSE)),
  contextual = list(estimate = st["ses_mean", "Estimate"], se = st["ses_mean", "Std. Error"],
                    df = st["ses_mean", "df"], p = st["ses_mean", "Pr(>|t|)"],
                    within = st["ses", "Estimate"])
), "hsb_hausman.json")

## Likelihood-ratio tests of three REML fits (anova refits them by ML) ----------------------------
sleep <- rd("sleepstudy")
forms <- c("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days || Subject)",
           "Reaction ~ Days + (Days | Subject)")
fits <- lapply(forms, function(f) lme4::lmer(as.formula(f), sleep, REML = TRUE))
a <- anova(fits[[1]], fits[[2]], fits[[3]])
out(list(
  id = "sleepstudy_lrt3", data = "sleepstudy", kind = "anova", models = forms, REML = TRUE, refit_ml = TRUE,
  npar = a$npar, AIC = a$AIC, BIC = a$BIC, logLik = a$logLik, deviance = a$deviance,
  Chisq = a$Chisq, Df = a$Df, p = a[["Pr(>Chisq)"]]
), "sleepstudy_lrt3.json")

## Profile intervals of one-way models (one has its sd at the boundary) ---------------------------
prof <- function(name, formula) {
  m <- lme4::lmer(as.formula(formula), rd(name), REML = TRUE)
  ci <- suppressWarnings(confint(m, method = "profile", oldNames = FALSE))
  list(formula = formula, names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))
}
out(list(id = "confint_profile_oneway", note = "lme4 confint(m, method = 'profile', oldNames = FALSE), REML fits",
         dyestuff = prof("dyestuff", "Yield ~ 1 + (1 | Batch)"),
         dyestuff2 = prof("dyestuff2", "Yield ~ 1 + (1 | Batch)")),
    "confint_profile_oneway.json")

## Satterthwaite and Kenward-Roger with two grouping factors --------------------------------------
ddf2 <- function(name, formula) {
  m <- lmer(as.formula(formula), rd(name), REML = TRUE)
  s <- summary(m, ddf = "Satterthwaite")$coef
  k <- summary(m, ddf = "Kenward-Roger")$coef
  list(formula = formula, theta = unname(getME(m, "theta")), objective = REMLcrit(m),
       satterthwaite = list(df = s[, "df"], p = s[, "Pr(>|t|)"]),
       kenward_roger = list(df = k[, "df"], se = k[, "Std. Error"], p = k[, "Pr(>|t|)"]))
}
out(list(id = "ddf_two_factors", note = "lmerTest summary(m, ddf = ...), REML fits",
         penicillin = ddf2("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
         pastes = ddf2("pastes", "strength ~ 1 + (1 | batch/cask)")),
    "ddf_two_factors.json")

## Satterthwaite for an ML fit (lmerTest uses the ML deviance's Hessian) --------------------------
m <- lmer(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE)
s <- summary(m, ddf = "Satterthwaite")$coef
out(list(id = "sleepstudy_rs_ml_satterthwaite", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)",
         REML = FALSE, theta = unname(getME(m, "theta")), objective = deviance(m),
         df = as.list(s[, "df"]), p = as.list(s[, "Pr(>|t|)"]), se = as.list(s[, "Std. Error"])),
    "sleepstudy_rs_ml_satterthwaite.json")

## Profile intervals with two grouping factors ----------------------------------------------------
out(list(id = "confint_profile_two_factors", note = "lme4 confint(m, method = 'profile', oldNames = FALSE), REML fits",
         pastes = prof("pastes", "strength ~ 1 + (1 | batch/cask)"),
         penicillin = prof("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")),
    "confint_profile_two_factors.json")

## Kenward-Roger with two uncorrelated terms on one factor, from pbkrtest directly ----------------
## (lmerTest's summary(m, ddf = "Kenward-Roger") falls back to Satterthwaite for this model)
m <- lme4::lmer(Reaction ~ Days + (Days || Subject), sleep)
v <- pbkrtest::vcovAdj(m)
out(list(id = "sleepstudy_uncorr_kr", data = "sleepstudy", formula = "Reaction ~ Days + (Days || Subject)",
         REML = TRUE, note = "pbkrtest::vcovAdj and pbkrtest::Lb_ddf per fixed effect",
         df = list("(Intercept)" = pbkrtest::Lb_ddf(c(1, 0), vcov(m), v), Days = pbkrtest::Lb_ddf(c(0, 1), vcov(m), v)),
         se = as.list(sqrt(diag(as.matrix(v)))), vcov_adj = as.matrix(v)),
    "sleepstudy_uncorr_kr.json")
