# -*- coding: utf-8 -*-
"""
References of the DeepHEMNMA plugin (pyworkflow parses this docstring). The
doi fields are URLs so that Scipion turns citations into links.


@article{Hamitouche2022,
title = {DeepHEMNMA: ResNet-based hybrid analysis of continuous conformational heterogeneity in cryo-EM single particle images},
author = {Hamitouche, Ilyes and Jonic, Slavica},
journal = {Frontiers in Molecular Biosciences},
volume = {9},
pages = {965645},
year = {2022},
doi = {https://doi.org/10.3389/fmolb.2022.965645}
}

@article{Jin2014,
title = {Iterative elastic 3D-to-2D alignment method using normal modes for studying structural dynamics of large macromolecular complexes},
author = {Jin, Qiyu and Sorzano, Carlos Oscar S. and de la Rosa-Trevin, Jose Miguel and Bilbao-Castro, Jose Roman and Nunez-Ramirez, Rafael and Llorca, Oscar and Tama, Florence and Jonic, Slavica},
journal = {Structure},
volume = {22},
pages = {496--506},
year = {2014},
doi = {https://doi.org/10.1016/j.str.2014.01.004}
}

@article{Harastani2020,
title = {Hybrid electron microscopy normal mode analysis with Scipion},
author = {Harastani, Mohamad and Sorzano, Carlos Oscar S. and Jonic, Slavica},
journal = {Protein Science},
volume = {29},
pages = {223--236},
year = {2020},
doi = {https://doi.org/10.1002/pro.3772}
}

@inproceedings{He2016,
title = {Deep Residual Learning for Image Recognition},
author = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
pages = {770--778},
year = {2016},
doi = {https://doi.org/10.1109/CVPR.2016.90}
}
"""
