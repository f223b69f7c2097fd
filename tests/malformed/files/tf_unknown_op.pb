
.
xPlaceholder*
dtype0*
shape:

y
Frobnicatex*
T0"¿