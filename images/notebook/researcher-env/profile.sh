# Havre (images/notebook/researcher-env/profile.sh -> /etc/profile.d/havre-venv.sh).
# JupyterLab's terminal starts a login shell (bash -l), and Debian's /etc/profile sets PATH
# anew, without the analysis environment: `python` was not found and `python3` was the
# system's, without pandas. Put the environment first again, as in notebooks.
case ":${PATH}:" in
    *:/opt/havre/venv/bin:*) ;;
    *) PATH="/opt/havre/venv/bin:${PATH}" ;;
esac
VIRTUAL_ENV=/opt/havre/venv
export PATH VIRTUAL_ENV
