"""Throw-away certificates for the TLS tests, made with the openssl command at run time.

Nothing here is checked in: a test (or a module fixture) builds what it needs in a
temporary directory. Certificates live one day (an expired one lies in the past on
purpose), keys are P-256 unless asked otherwise, and `openssl ca` signs every leaf
because it is the one OpenSSL 3.0 command that takes explicit -startdate/-enddate.

    pki = Pki(tmp_dir)
    ca = pki.ca("Test CA")
    server = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])
    expired = ca.issue("old", dns=["localhost"], days=(-30, -29))
    client = ca.issue("client", client=True)
    server.cert, server.key, client.encrypted_key("passphrase")
"""

import datetime
import os
import subprocess
from pathlib import Path

OPENSSL = "openssl"
TIMEOUT = 60


def run(*args, cwd=None):
    p = subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, timeout=TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace')}")
    return p.stdout


def make_key(path, kind="ec"):
    if kind == "rsa":
        run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)
    return path


def stamp(when):
    return when.strftime("%Y%m%d%H%M%SZ")


REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

CA_CONFIG = """\
[ca]
default_ca = this_ca
[this_ca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
email_in_dn = no
[any]
commonName = supplied
"""


class Leaf:
    def __init__(self, name, cert, key):
        self.name = name
        self.cert = cert
        self.key = key

    def encrypted_key(self, passphrase, traditional=False):
        """The key protected by `passphrase` (PKCS#8, or OpenSSL's traditional PEM)."""
        out = self.key.with_name(f"{self.name}-{'trad' if traditional else 'pkcs8'}-enc-key.pem")
        args = ["pkey", "-in", self.key, "-aes-256-cbc", "-passout", f"pass:{passphrase}", "-out", out]
        if traditional:
            args.insert(1, "-traditional")
        run(*args)
        return out

    def __repr__(self):
        return f"Leaf({self.name!r})"


class CA:
    def __init__(self, pki, name):
        self.pki = pki
        self.name = name
        slug = name.lower().replace(" ", "-")
        self.dir = pki.dir / slug
        (self.dir / "issued").mkdir(parents=True)
        (self.dir / "index.txt").touch()
        (self.dir / "serial").write_text("1000\n")
        self.config = self.dir / "ca.cnf"
        self.config.write_text(CA_CONFIG.format(dir=self.dir))
        self.key = make_key(self.dir / "ca-key.pem")
        self.cert = self.dir / "ca.pem"
        run("req", "-x509", "-new", "-config", pki.req_config, "-extensions", "ca_ext",
            "-key", self.key, "-subj", f"/CN={name}", "-days", "1", "-out", self.cert)

    def issue(self, name, dns=(), ips=(), client=False, days=(0, 1), key_kind="ec", cn=None):
        """A leaf signed by this CA, valid from now+days[0] to now+days[1] (in days;
        the start is moved an hour back so that clocks a little apart agree)."""
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        start = now + datetime.timedelta(days=days[0], hours=-1)
        end = now + datetime.timedelta(days=days[1])
        key = make_key(self.pki.dir / f"{name}-key.pem", key_kind)
        csr = self.pki.dir / f"{name}.csr"
        run("req", "-new", "-config", self.pki.req_config, "-key", key,
            "-subj", f"/CN={cn or name}", "-out", csr)
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        ext = ["basicConstraints = critical,CA:FALSE",
               "keyUsage = critical,digitalSignature,keyEncipherment",
               f"extendedKeyUsage = {'clientAuth' if client else 'serverAuth'}",
               "authorityKeyIdentifier = keyid"]
        if sans:
            ext.append("subjectAltName = " + ",".join(sans))
        extfile = self.pki.dir / f"{name}.ext"
        extfile.write_text("[leaf]\n" + "\n".join(ext) + "\n")
        cert = self.pki.dir / f"{name}-cert.pem"
        run("ca", "-batch", "-notext", "-config", self.config, "-cert", self.cert,
            "-keyfile", self.key, "-in", csr, "-startdate", stamp(start), "-enddate", stamp(end),
            "-extfile", extfile, "-extensions", "leaf", "-out", cert)
        return Leaf(name, cert, key)


class Pki:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.req_config = self.dir / "req.cnf"
        self.req_config.write_text(REQ_CONFIG)

    def ca(self, name):
        return CA(self, name)

    def cert_dir(self, name, *cas):
        """A directory of CA certificates with OpenSSL's hash links (for SSL_CERT_DIR)."""
        d = self.dir / name
        d.mkdir()
        for ca in cas:
            (d / ca.cert.name.replace("ca", ca.dir.name, 1)).write_bytes(ca.cert.read_bytes())
        run("rehash", d)
        return d


def describe(cert):
    """Subject, dates and SANs of a certificate, for failure messages."""
    return run("x509", "-in", cert, "-noout", "-subject", "-dates", "-ext", "subjectAltName").decode()
