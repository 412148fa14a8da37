# pytest puts this directory on sys.path (its conftest.py is here), so the tests import `app`
# and `sluice_plugin` as the component does.
