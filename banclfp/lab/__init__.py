"""The lab database (docs/labo-serveur.md): every Pi's tests in one PostgreSQL, the folders staying the truth."""
