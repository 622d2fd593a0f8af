# lmerTest's type I anova with Satterthwaite and Kenward-Roger df on the embedded exam data
# (factors from the CSV labels, levels sorted alphabetically as hlm_jax sorts text).
suppressMessages({library(lmerTest); library(jsonlite)})
exam <- read.csv(gzfile("hlm_jax/datasets/data/exam.csv.gz"))
for (v in c("vr", "sex", "school")) exam[[v]] <- factor(exam[[v]])
m <- lmer(normexam ~ standLRT + vr + sex + vr:sex + (1 | school), data = exam)
out <- list(formula = "normexam ~ standLRT + vr + sex + vr:sex + (1 | school)", engine = paste("lmerTest", packageVersion("lmerTest")))
for (ddf in c("Satterthwaite", "Kenward-Roger")) {
  a <- anova(m, type = 1, ddf = ddf)
  out[[ddf]] <- list(term = rownames(a), SumSq = a[["Sum Sq"]], NumDF = a$NumDF, DenDF = a$DenDF,
                     F = a[["F value"]], p = a[["Pr(>F)"]])
}
a <- anova(as(m, "lmerMod"))
out$lme4 <- list(term = rownames(a), npar = a$npar, F = a[["F value"]])
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/exam_anova_ddf.json")

# type III (marginal) tests of a model without interactions
m3 <- lmer(normexam ~ standLRT + vr + sex + (1 | school), data = exam)
out3 <- list(formula = "normexam ~ standLRT + vr + sex + (1 | school)")
for (ddf in c("Satterthwaite", "Kenward-Roger")) {
  a <- anova(m3, type = 3, ddf = ddf)
  out3[[ddf]] <- list(term = rownames(a), NumDF = a$NumDF, DenDF = a$DenDF, F = a[["F value"]], p = a[["Pr(>F)"]])
}
writeLines(toJSON(out3, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/exam_anova_type3.json")
