# Profile-likelihood intervals of a GLMM (lme4 1.1-31's confint(method = "profile")) for tests/test_glmm_profile.py.
# Run from the repository root:  Rscript tests/reference/make_glmm_profile_reference.R
# Writes tests/reference/glmm_profile_cbpp.json.
suppressMessages({library(lme4); library(jsonlite)})
cbpp <- read.csv("hlm_jax/datasets/data/cbpp.csv.gz", colClasses = c(herd = "factor", period = "factor"))
f <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
m <- glmer(as.formula(f), cbpp, family = binomial)
out <- list(id = "glmm_profile_cbpp", engine = paste("lme4", packageVersion("lme4")), formula = f)
for (level in c(0.95, 0.8)) {
  ci <- confint(m, method = "profile", level = level, oldNames = FALSE)
  out[[paste0("level_", level * 100)]] <- list(level = level, names = rownames(ci),
                                                lower = unname(ci[, 1]), upper = unname(ci[, 2]))
}
pr <- profile(m, signames = FALSE)
out$zeta_samples <- lapply(split(as.data.frame(pr), as.data.frame(pr)$.par), function(d) {
  col <- as.character(d$.par[1])
  list(par = col, value = d[[col]], zeta = d$.zeta)
})
write_json(out, "tests/reference/glmm_profile_cbpp.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
