"""Response distributions of generalized linear (mixed) models: links and families as small objects.

A family gives, per row, the log-density of y given the linear predictor η (with prior weights), its
expected information (the PIRLS weight), deviance residuals, checks of the response's support and
simulation. A user adds a family by subclassing `Family` (and a link by subclassing `Link`).
Binomial responses are proportions y ∈ [0, 1] with the number of trials as prior weight, as in R.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr, ndtri, xlogy


class ResponseError(ValueError):
    """A response outside the family's support; the message names the rows."""


@dataclass(frozen=True)
class Link:
    """A link function g(μ) = η; subclasses give the inverse and its derivative."""

    name: str = "identity"

    def linkfun(self, mu):
        return mu

    def linkinv(self, eta):
        return eta

    def mu_eta(self, eta):
        """dμ/dη."""
        return jnp.ones_like(eta)


@dataclass(frozen=True)
class Logit(Link):
    name: str = "logit"

    def linkfun(self, mu):
        return jnp.log(mu) - jnp.log1p(-mu)

    def linkinv(self, eta):
        return jax.nn.sigmoid(eta)

    def mu_eta(self, eta):
        mu = jax.nn.sigmoid(eta)
        return mu * (1.0 - mu)


@dataclass(frozen=True)
class Probit(Link):
    name: str = "probit"

    def linkfun(self, mu):
        return ndtri(mu)

    def linkinv(self, eta):
        return ndtr(eta)

    def mu_eta(self, eta):
        return jnp.exp(-0.5 * eta * eta) / jnp.sqrt(2.0 * jnp.pi)


@dataclass(frozen=True)
class Cloglog(Link):
    name: str = "cloglog"

    def linkfun(self, mu):
        return jnp.log(-jnp.log1p(-mu))

    def linkinv(self, eta):
        return -jnp.expm1(-jnp.exp(eta))

    def mu_eta(self, eta):
        return jnp.exp(eta - jnp.exp(eta))


@dataclass(frozen=True)
class Log(Link):
    name: str = "log"

    def linkfun(self, mu):
        return jnp.log(mu)

    def linkinv(self, eta):
        return jnp.exp(eta)

    def mu_eta(self, eta):
        return jnp.exp(eta)


LINKS = {"identity": Link, "logit": Logit, "probit": Probit, "cloglog": Cloglog, "log": Log}


def make_link(link) -> Link:
    """A `Link` from its name or itself."""
    if isinstance(link, Link):
        return link
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r}; available: {', '.join(LINKS)}")
    return LINKS[link]()


@dataclass(frozen=True)
class Family:
    """A response distribution: `logpdf(y, eta, w, phi)` per row, and what a fit reports from it.

    `phi` is the dispersion (σ for the Gaussian; families without one ignore it)."""

    link: Link = Link()
    name: str = "family"
    links: tuple = ()
    has_dispersion: bool = False
    canonical: str = ""

    def __post_init__(self):
        object.__setattr__(self, "link", make_link(self.link))
        if self.links and self.link.name not in self.links:
            raise ValueError(f"the {self.name} family takes the links {', '.join(self.links)}, not {self.link.name!r}")

    def logpdf(self, y, eta, w, phi):
        """log p(y | η) per row. A new family defines this, or `kernel` and `log_normalizer`."""
        return self.kernel(y, eta, w, phi) + self.log_normalizer(y, w)

    def kernel(self, y, eta, w, phi):
        """The part of `logpdf` that depends on η or φ: what a fit iterates on (the rest is a constant)."""
        if type(self).logpdf is Family.logpdf:
            raise NotImplementedError(f"{type(self).__name__} defines neither logpdf nor kernel")
        return self.logpdf(y, eta, w, phi) - self.log_normalizer(y, w)

    def log_normalizer(self, y, w):
        """The part of `logpdf` free of η and φ (binomial coefficients, log y!), computed once per fit."""
        return jnp.zeros_like(y)

    def variance(self, mu):
        raise NotImplementedError

    def fisher_weight(self, eta, w, phi):
        """Expected information of η per row, w (dμ/dη)²/V(μ)/φ: lme4's PIRLS weights."""
        mu = self.link.linkinv(eta)
        return w * self.link.mu_eta(eta) ** 2 / self.variance(mu) / self.dispersion_scale(phi)

    def dispersion_scale(self, phi):
        return 1.0

    def unit_deviance(self, y, mu, w):
        """Deviance contribution per row (the squared deviance residual)."""
        raise NotImplementedError

    def check(self, y: np.ndarray, w: np.ndarray, rows) -> None:
        """Raise `ResponseError` naming the rows when y (or the weights) are outside the support."""

    def simulate(self, key, mu, w, phi):
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.name}  ( {self.link.name} )"


def bad_rows(mask: np.ndarray, rows) -> str:
    """The first few row labels where `mask` holds, for a message."""
    hits = [repr(r.item() if isinstance(r, np.generic) else r) for r in np.asarray(rows)[np.asarray(mask)]]
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    return ", ".join(hits[:5]) + more


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial proportions y with w trials (w = 1 for 0/1 responses)."""

    link: Link = Logit()
    name: str = "binomial"
    links: tuple = ("logit", "probit", "cloglog")
    canonical: str = "logit"

    def kernel(self, y, eta, w, phi):
        k = y * w
        log_mu, log_1mu = self.log_probabilities(eta)
        return jnp.where(k > 0, k * log_mu, 0.0) + jnp.where(w - k > 0, (w - k) * log_1mu, 0.0)

    def log_normalizer(self, y, w):
        k = y * w
        return gammaln(w + 1.0) - gammaln(k + 1.0) - gammaln(w - k + 1.0)

    def log_probabilities(self, eta):
        """log μ and log(1 − μ), accurate in both tails."""
        if isinstance(self.link, Logit):
            return -jax.nn.softplus(-eta), -jax.nn.softplus(eta)
        if isinstance(self.link, Probit):
            return jax.scipy.special.log_ndtr(eta), jax.scipy.special.log_ndtr(-eta)
        mu = self.link.linkinv(eta)
        return jnp.log(mu), jnp.log1p(-mu)

    def variance(self, mu):
        return mu * (1.0 - mu)

    def unit_deviance(self, y, mu, w):
        return 2.0 * w * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))

    def check(self, y, w, rows) -> None:
        bad = (y < 0) | (y > 1)
        if bad.any():
            raise ResponseError(f"binomial responses must be proportions in [0, 1] (or 0/1); rows {bad_rows(bad, rows)} "
                                "are outside; for counts of successes use cbind(successes, failures)")
        if (w < 0).any():
            raise ResponseError(f"binomial trials (weights) must be non-negative; rows {bad_rows(w < 0, rows)}")
        k = y * w
        frac = np.abs(k - np.round(k)) > 1e-7 * np.maximum(1.0, w)
        if frac.any():
            raise ResponseError(f"binomial successes (response × weights) must be whole numbers; rows "
                                f"{bad_rows(frac, rows)} are not")

    def simulate(self, key, mu, w, phi):
        n = jnp.round(w)
        return jax.random.binomial(key, n, mu) / jnp.where(n > 0, n, 1.0)


@dataclass(frozen=True)
class Poisson(Family):
    """Poisson counts; prior weights multiply the log-density (R's poisson())."""

    link: Link = Log()
    name: str = "poisson"
    links: tuple = ("log", "identity")
    canonical: str = "log"

    def kernel(self, y, eta, w, phi):
        mu = self.link.linkinv(eta)
        log_mu = eta if isinstance(self.link, Log) else jnp.log(mu)
        return w * (jnp.where(y > 0, y * log_mu, 0.0) - mu)

    def log_normalizer(self, y, w):
        return -w * gammaln(y + 1.0)

    def variance(self, mu):
        return mu

    def unit_deviance(self, y, mu, w):
        return 2.0 * w * (xlogy(y, y / mu) - (y - mu))

    def check(self, y, w, rows) -> None:
        if (y < 0).any():
            raise ResponseError(f"Poisson counts must be non-negative; rows {bad_rows(y < 0, rows)} are negative")
        frac = np.abs(y - np.round(y)) > 1e-7 * np.maximum(1.0, np.abs(y))
        if frac.any():
            raise ResponseError(f"Poisson counts must be whole numbers; rows {bad_rows(frac, rows)} are not")

    def simulate(self, key, mu, w, phi):
        return jax.random.poisson(key, mu).astype(mu.dtype)


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal responses with sd φ/√w: with the identity link, `glmer` is `lmer(REML=False)`."""

    link: Link = Link()
    name: str = "gaussian"
    links: tuple = ("identity", "log")
    has_dispersion: bool = True
    canonical: str = "identity"

    def kernel(self, y, eta, w, phi):
        mu = self.link.linkinv(eta)
        return -jnp.log(phi) - 0.5 * w * (y - mu) ** 2 / phi ** 2

    def log_normalizer(self, y, w):
        return 0.5 * jnp.log(w) - 0.5 * jnp.log(2.0 * jnp.pi)

    def variance(self, mu):
        return jnp.ones_like(mu)

    def dispersion_scale(self, phi):
        return phi ** 2

    def unit_deviance(self, y, mu, w):
        return w * (y - mu) ** 2

    def simulate(self, key, mu, w, phi):
        return mu + phi / jnp.sqrt(w) * jax.random.normal(key, mu.shape, mu.dtype)


FAMILIES = {"binomial": Binomial, "poisson": Poisson, "gaussian": Gaussian}


def make_family(family, link=None) -> Family:
    """A `Family` from a name ("binomial", "poisson", "gaussian"), a class or an instance."""
    if isinstance(family, Family):
        return family if link is None else type(family)(link=link)
    if isinstance(family, type) and issubclass(family, Family):
        return family() if link is None else family(link=link)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; available: {', '.join(FAMILIES)}")
    cls = FAMILIES[family]
    return cls() if link is None else cls(link=link)
