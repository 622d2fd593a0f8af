# lmerTest's type III anova (Satterthwaite) of models with terms contained in interactions, on the
# embedded exam data (factors from the CSV labels, levels sorted alphabetically as hlm_jax sorts text).
suppressMessages({library(lmerTest); library(jsonlite)})
exam <- read.csv(gzfile("hlm_jax/datasets/data/exam.csv.gz"))
for (v in c("vr", "sex", "school")) exam[[v]] <- factor(exam[[v]])
forms <- c("normexam ~ standLRT * vr + vr * sex + (1 | school)",
           "normexam ~ standLRT * vr * sex + (1 | school)",
           "normexam ~ vr + vr:sex + vr:standLRT + (1 | school)")
out <- list(engine = paste("lmerTest", packageVersion("lmerTest")))
# the last fit leaves out one cell of vr:sex (top 25% boys): R drops the aliased column
cells <- list(exam, exam, exam, exam[!(exam$vr == "top 25%" & exam$sex == "M"), ])
forms <- c(forms, "normexam ~ standLRT * vr + vr * sex + (1 | school)")
for (k in seq_along(forms)) {
  f <- forms[k]
  m <- lmer(as.formula(f), data = cells[[k]])
  a <- anova(m, type = 3, ddf = "Satterthwaite")
  out$models[[length(out$models) + 1]] <- list(formula = f, missing_cell = k == 4, term = rownames(a), SumSq = a[["Sum Sq"]],
    MeanSq = a[["Mean Sq"]], NumDF = a$NumDF, DenDF = a$DenDF, F = a[["F value"]], p = a[["Pr(>F)"]])
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/exam_anova_type3_interactions.json")
