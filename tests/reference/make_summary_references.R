# References for tests/test_summary.py: lmerTest summaries and broom.mixed tables.
# Run from the repository root:  Rscript tests/reference/make_summary_references.R
# Made with R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2, broom.mixed 0.2.9.4 (Debian packages),
# on the package's own CSV files, so the data are exactly those the tests load.
suppressPackageStartupMessages({library(lmerTest); library(broom.mixed); library(jsonlite)})
rd <- function(name) read.csv(gzfile(file.path("hlm_jax/datasets/data", paste0(name, ".csv.gz"))))
coefs <- function(m, ddf) {
  s <- summary(m, ddf = ddf)$coefficients
  list(term = rownames(s), estimate = unname(s[, 1]), std_error = unname(s[, 2]), df = unname(s[, 3]),
       statistic = unname(s[, 4]), p_value = unname(s[, 5]))
}
case <- function(formula, data, REML = TRUE) {
  m <- lmer(as.formula(formula), data, REML = REML)
  list(formula = formula, REML = REML,
       printed = capture.output(print(summary(m))),
       printed_kr = if (REML) capture.output(print(summary(m, ddf = "Kenward-Roger"))) else NULL,
       satterthwaite = coefs(m, "Satterthwaite"), kenward_roger = if (REML) coefs(m, "Kenward-Roger") else NULL,
       tidy_fixed = as.list(as.data.frame(tidy(m, effects = "fixed"))),
       tidy_ran_pars = as.list(as.data.frame(tidy(m, effects = "ran_pars"))),
       tidy_ran_vals = as.list(as.data.frame(tidy(m, effects = "ran_vals"))),
       glance = as.list(as.data.frame(glance(m))))
}
sleep <- rd("sleepstudy"); sleep$Subject <- factor(sleep$Subject)
hsb <- rd("hsb"); hsb$school <- factor(hsb$school)
out <- list(
  id = "summary_references",
  note = "lmerTest summary(m) (Satterthwaite, and ddf = 'Kenward-Roger') printed and as tables; broom.mixed tidy/glance",
  sleepstudy = case("Reaction ~ Days + (Days | Subject)", sleep),
  sleepstudy_ml = case("Reaction ~ Days + (Days | Subject)", sleep, REML = FALSE),
  hsb = case("mathach ~ cses * sector + meanses + (cses | school)", hsb))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/summary_references.json")
