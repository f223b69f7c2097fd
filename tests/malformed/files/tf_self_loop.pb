
.
xPlaceholder*
dtype0*
shape:

yAddV2xy*
T0"¿