
ÿÿÿÿ not a graph